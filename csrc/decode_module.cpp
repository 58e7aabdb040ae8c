// polyasr._decode: nanobind bindings. Inputs are CPU, C-contiguous arrays (numpy, or any DLPack
// tensor such as torch's) taken without copies; the loops run with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <utility>

#include "ctc_greedy.h"

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
}
