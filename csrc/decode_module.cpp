// polyasr._decode: nanobind bindings. Inputs are CPU, C-contiguous arrays (numpy, or any DLPack
// tensor such as torch's) taken without copies; the loops run with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "ctc_greedy.h"
#include "tdt_greedy.h"
#include "top_k.h"

namespace nb = nanobind;
using polyasr::CtcBatchResult;

namespace {

template <typename T>
using Array = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
using Lengths = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> to_numpy(std::vector<T>&& values) {
    auto* owned = new std::vector<T>(std::move(values));
    nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
    return nb::ndarray<nb::numpy, T, nb::ndim<1>>(owned->data(), {owned->size()}, owner);
}

void check_lengths(const Lengths& lengths, int64_t batch, int64_t n_frames) {
    if (static_cast<int64_t>(lengths.shape(0)) != batch) {
        throw nb::value_error(("lengths has " + std::to_string(lengths.shape(0)) + " entries for a batch of " +
                               std::to_string(batch)).c_str());
    }
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t n = lengths.data()[b];
        if (n < 0 || n > n_frames) {
            throw nb::value_error(("lengths[" + std::to_string(b) + "] = " + std::to_string(n) +
                                   " is outside [0, " + std::to_string(n_frames) + "] frames").c_str());
        }
    }
}

nb::tuple result(CtcBatchResult&& r) {
    return nb::make_tuple(to_numpy(std::move(r.tokens)), to_numpy(std::move(r.frames)), to_numpy(std::move(r.offsets)));
}

template <typename Id>
nb::tuple ctc_ids(const Array<Id>& ids, const Lengths& lengths, int64_t blank) {
    if (ids.ndim() != 2) throw nb::value_error("ids must be 2-D (batch, frames)");
    const int64_t batch = ids.shape(0), n_frames = ids.shape(1);
    check_lengths(lengths, batch, n_frames);
    CtcBatchResult r;
    {
        nb::gil_scoped_release release;
        polyasr::ctc_collapse_ids<Id>(ids.data(), batch, n_frames, lengths.data(), blank, r);
    }
    return result(std::move(r));
}

nb::tuple ctc_logits(const Array<float>& logits, const Lengths& lengths, int64_t blank) {
    if (logits.ndim() != 3) throw nb::value_error("logits must be 3-D (batch, frames, vocab)");
    const int64_t batch = logits.shape(0), n_frames = logits.shape(1), vocab = logits.shape(2);
    if (vocab < 1) throw nb::value_error("logits have an empty vocabulary axis");
    if (blank < 0 || blank >= vocab) {
        throw nb::value_error(("blank " + std::to_string(blank) + " is outside the vocabulary [0, " +
                               std::to_string(vocab) + ")").c_str());
    }
    check_lengths(lengths, batch, n_frames);
    CtcBatchResult r;
    {
        nb::gil_scoped_release release;
        polyasr::ctc_collapse_logits(logits.data(), batch, n_frames, vocab, lengths.data(), blank, r);
    }
    return result(std::move(r));
}

std::string shape_str(std::initializer_list<int64_t> dims) {
    std::string s = "(";
    for (int64_t d : dims) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
    return s + (dims.size() == 1 ? ",)" : ")");
}

// Raises ValueError naming the argument unless `a` has exactly the expected shape.
template <typename A>
void check_shape(const char* name, const A& a, std::initializer_list<int64_t> dims) {
    bool ok = a.ndim() == dims.size();
    std::string got = "(";
    for (size_t i = 0; i < a.ndim(); ++i) {
        got += (i ? ", " : "") + std::to_string(a.shape(i));
        if (ok && static_cast<int64_t>(a.shape(i)) != dims.begin()[i]) ok = false;
    }
    got += a.ndim() == 1 ? ",)" : ")";
    if (!ok) throw nb::value_error((std::string(name) + " must have shape " + shape_str(dims) + ", got " + got).c_str());
}

using Durations = nb::ndarray<const int64_t, nb::c_contig, nb::device::cpu>;

nb::tuple tdt_greedy(const Array<float>& enc_proj, const Lengths& lengths, const Array<float>& embed,
                     const Array<float>& w_ih, const Array<float>& w_hh, const Array<float>& bias,
                     const Array<float>& pred_w, const Array<float>& pred_b, const Array<float>& out_w,
                     const Array<float>& out_b, const Durations& durations, int64_t blank, int64_t max_symbols,
                     int threads) {
    if (enc_proj.ndim() != 3) throw nb::value_error("enc_proj must be 3-D (batch, frames, joint)");
    if (embed.ndim() != 2) throw nb::value_error("embed must be 2-D (tokens incl. blank, hidden)");
    if (w_ih.ndim() != 3) throw nb::value_error("w_ih must be 3-D (layers, 4 * hidden, hidden)");
    if (durations.ndim() != 1 || durations.shape(0) == 0) throw nb::value_error("durations must be a non-empty 1-D array");
    const int64_t batch = enc_proj.shape(0), n_frames = enc_proj.shape(1), J = enc_proj.shape(2);
    const int64_t V1 = embed.shape(0), P = embed.shape(1), L = w_ih.shape(0), D = durations.shape(0);
    if (V1 < 1 || P < 1 || J < 1 || L < 1) throw nb::value_error("embed, enc_proj and w_ih must not have empty axes");
    check_shape("w_ih", w_ih, {L, 4 * P, P});
    check_shape("w_hh", w_hh, {L, 4 * P, P});
    check_shape("bias", bias, {L, 4 * P});
    check_shape("pred_w", pred_w, {J, P});
    check_shape("pred_b", pred_b, {J});
    check_shape("out_w", out_w, {V1 + D, J});
    check_shape("out_b", out_b, {V1 + D});
    check_lengths(lengths, batch, n_frames);
    for (int64_t i = 0; i < D; ++i) {
        const int64_t d = durations.data()[i];
        if (d < 0 || d > std::numeric_limits<int32_t>::max()) {
            throw nb::value_error(("durations[" + std::to_string(i) + "] = " + std::to_string(d) +
                                   " is negative or beyond int32").c_str());
        }
    }
    if (blank < 0 || blank >= V1) {
        throw nb::value_error(("blank " + std::to_string(blank) + " is outside the tokens [0, " + std::to_string(V1) +
                               ") of embed").c_str());
    }
    if (max_symbols < 1) throw nb::value_error("max_symbols must be >= 1");
    if (threads < 0) throw nb::value_error("threads must be >= 0 (0: one per CPU core)");
    const polyasr::TdtWeights w{embed.data(), w_ih.data(), w_hh.data(), bias.data(), pred_w.data(), pred_b.data(),
                                out_w.data(), out_b.data(), durations.data(), V1, P, L, J, D};
    polyasr::TdtBatchResult r;
    {
        nb::gil_scoped_release release;
        polyasr::tdt_greedy_decode(enc_proj.data(), batch, n_frames, lengths.data(), w, blank, max_symbols, threads, r);
    }
    return nb::make_tuple(to_numpy(std::move(r.tokens)), to_numpy(std::move(r.frames)),
                          to_numpy(std::move(r.durations)), to_numpy(std::move(r.confidences)),
                          to_numpy(std::move(r.offsets)));
}

nb::tuple top_k(const nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>& scores, int64_t k) {
    const int64_t rows = scores.shape(0), n = scores.shape(1);
    if (k < 1 || k > n) {
        throw nb::value_error(("k = " + std::to_string(k) + " is outside [1, " + std::to_string(n) +
                               "], the scores per row").c_str());
    }
    auto* index = new std::vector<int64_t>(rows * k);
    auto* value = new std::vector<float>(rows * k);
    {
        nb::gil_scoped_release release;
        polyasr::top_k_rows(scores.data(), rows, n, k, index->data(), value->data());
    }
    nb::capsule own_index(index, [](void* p) noexcept { delete static_cast<std::vector<int64_t>*>(p); });
    nb::capsule own_value(value, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
    const size_t shape[2] = {static_cast<size_t>(rows), static_cast<size_t>(k)};
    return nb::make_tuple(nb::ndarray<nb::numpy, int64_t, nb::ndim<2>>(index->data(), 2, shape, own_index),
                          nb::ndarray<nb::numpy, float, nb::ndim<2>>(value->data(), 2, shape, own_value));
}

}  // namespace

NB_MODULE(_decode, m) {
    m.doc() = "polyasr's compiled greedy decoding loops";
    const char* doc =
        "ctc_greedy(x, lengths, blank) -> (tokens int32, frames int32, offsets int64)\n"
        "x: (batch, frames) int32/int64 label ids, or (batch, frames, vocab) float32 scores.\n"
        "Item i's tokens and frames are [offsets[i], offsets[i+1]).";
    // noconvert: a wrong dtype or layout is an error, never a silent copy or conversion.
    m.def("ctc_greedy", &ctc_ids<int32_t>, nb::arg("x").noconvert(), nb::arg("lengths").noconvert(),
          nb::arg("blank"), doc);
    m.def("ctc_greedy", &ctc_ids<int64_t>, nb::arg("x").noconvert(), nb::arg("lengths").noconvert(),
          nb::arg("blank"));
    m.def("ctc_greedy", &ctc_logits, nb::arg("x").noconvert(), nb::arg("lengths").noconvert(), nb::arg("blank"));

    m.def("tdt_greedy", &tdt_greedy, nb::arg("enc_proj").noconvert(), nb::arg("lengths").noconvert(),
          nb::arg("embed").noconvert(), nb::arg("w_ih").noconvert(), nb::arg("w_hh").noconvert(),
          nb::arg("bias").noconvert(), nb::arg("pred_w").noconvert(), nb::arg("pred_b").noconvert(),
          nb::arg("out_w").noconvert(), nb::arg("out_b").noconvert(), nb::arg("durations").noconvert(),
          nb::arg("blank"), nb::arg("max_symbols") = 10, nb::arg("threads") = 1,
          "tdt_greedy(enc_proj, lengths, embed, w_ih, w_hh, bias, pred_w, pred_b, out_w, out_b, durations, blank,\n"
          "           max_symbols=10, threads=1) -> (tokens int32, frames int32, durations int32,\n"
          "           confidences float32, offsets int64)\n"
          "TDT greedy (label-looping) decoding; float32 C-contiguous CPU arrays: enc_proj (B, T, J), embed (V1, P),\n"
          "w_ih and w_hh (L, 4P, P) with gate rows i, f, g, o, bias (L, 4P) = b_ih + b_hh, pred_w (J, P), pred_b (J,),\n"
          "out_w (V1 + D, J), out_b (V1 + D,); lengths (B,) and durations (D,) int64. threads=0: one per core.\n"
          "Item i's emissions are [offsets[i], offsets[i+1]).");
    m.def("top_k", &top_k, nb::arg("scores").noconvert(), nb::arg("k"),
          "top_k(scores, k) -> (index int64, value float32), each (rows, k)\n"
          "The k largest of each row of scores (rows, n) float32 C-contiguous, best first, equal scores in\n"
          "index order; one pass per row whatever the ties (NaN scores are not allowed).");
    m.def("tdt_kernel_isa", &polyasr::tdt_kernel_isa, "The ISA of the matrix-vector kernel in use.");
}
