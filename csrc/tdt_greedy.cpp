#include "tdt_greedy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <thread>

// The hot kernel is compiled twice on x86-64, for the baseline ISA and for AVX2 + FMA, and picked
// at run time: the wheel stays portable (no -march=native) and still uses AVX2 where it exists.
// __builtin_cpu_supports needs no ifunc, so this also works on macOS; aarch64 has NEON as baseline.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define POLYASR_X86_DISPATCH 1
#endif

#if defined(__GNUC__)
#define POLYASR_INLINE inline __attribute__((always_inline))
#define POLYASR_UNROLL _Pragma("GCC unroll 16")
#else
#define POLYASR_INLINE inline
#define POLYASR_UNROLL
#endif

namespace polyasr {

namespace {

// Each dot product is summed in kLanes independent partial sums reduced in a fixed order, whatever
// the tile shape: an item's result does not depend on which other items share its tile, so batching
// and threads change nothing in the output. The partial sums live in native-width vectors V (GCC/Clang
// vector extensions: 16 bytes for SSE2/NEON, 32 for AVX2), kLanes / width of them per dot product.
constexpr int kLanes = 16;

#if defined(__GNUC__)
typedef float V4 __attribute__((vector_size(16)));
typedef float V8 __attribute__((vector_size(32)));
#else
struct V4 {  // a portable stand-in for compilers without vector extensions
    float v[4];
    V4& operator+=(const V4& o) { for (int l = 0; l < 4; ++l) v[l] += o.v[l]; return *this; }
    V4 operator*(const V4& o) const { V4 p; for (int l = 0; l < 4; ++l) p.v[l] = v[l] * o.v[l]; return p; }
};
#endif

// An unaligned vector load (by reference: returning a 32-byte vector by value would be an ABI
// question outside AVX code).
template <typename V>
POLYASR_INLINE void load(V& v, const float* p) {
    std::memcpy(&v, p, sizeof v);
}

// ys[k][row + r] = (accumulate ? ys[k][row + r] : bias[row + r] or 0) + W[row + r] . xs[k], for an
// R x K tile: each loaded row segment serves K vectors, each vector segment R rows.
template <typename V, int R, int K>
POLYASR_INLINE void dot_tile(const float* w, int64_t n, const float* const* xs, float* const* ys, int64_t row,
                             const float* bias, bool accumulate) {
    constexpr int kWidth = sizeof(V) / sizeof(float), kParts = kLanes / kWidth;
    // Full unrolling (forced: GCC's heuristics give up on some shapes) keeps acc in registers.
    V acc[R][K][kParts];
    POLYASR_UNROLL
    for (int r = 0; r < R; ++r) {
        POLYASR_UNROLL
        for (int k = 0; k < K; ++k) {
            POLYASR_UNROLL
            for (int p = 0; p < kParts; ++p) acc[r][k][p] = V{};
        }
    }
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
        POLYASR_UNROLL
        for (int p = 0; p < kParts; ++p) {
            V x[K];
            POLYASR_UNROLL
            for (int k = 0; k < K; ++k) load(x[k], xs[k] + j + p * kWidth);
            POLYASR_UNROLL
            for (int r = 0; r < R; ++r) {
                V a;
                load(a, w + r * n + j + p * kWidth);
                POLYASR_UNROLL
                for (int k = 0; k < K; ++k) acc[r][k][p] += a * x[k];
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int k = 0; k < K; ++k) {
            float s[kLanes];
            std::memcpy(s, acc[r][k], sizeof s);
            for (int width = kLanes / 2; width >= 1; width /= 2) {
                for (int l = 0; l < width; ++l) s[l] += s[l + width];
            }
            for (int64_t i = j; i < n; ++i) s[0] += w[r * n + i] * xs[k][i];  // the tail, in order
            float& y = ys[k][row + r];
            y = (accumulate ? y : (bias ? bias[row + r] : 0.0f)) + s[0];
        }
    }
}

// K vectors against rows [r0, r1); fewer vectors take more rows per tile to keep enough independent
// accumulators in flight.
template <typename V, int K>
POLYASR_INLINE void gemv_rows(const float* w, int64_t cols, const float* const* xs, float* const* ys, int64_t r0,
                              int64_t r1, const float* bias, bool accumulate) {
    constexpr int R = K == 1 ? 4 : K == 2 ? 2 : 1;
    int64_t r = r0;
    for (; r + R <= r1; r += R) dot_tile<V, R, K>(w + r * cols, cols, xs, ys, r, bias, accumulate);
    for (; r < r1; ++r) dot_tile<V, 1, K>(w + r * cols, cols, xs, ys, r, bias, accumulate);
}

// ys[k] (+)= W xs[k] (+ bias) for n vectors: W (rows, cols) is streamed once, in blocks of rows that
// stay in L1 while every 4-vector tile passes over them.
template <typename V>
POLYASR_INLINE void gemv_impl(const float* w, int64_t rows, int64_t cols, const float* const* xs, float* const* ys,
                              int n, const float* bias, bool accumulate) {
    constexpr int64_t kRowBlock = 8;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
        const int64_t r1 = std::min(rows, r0 + kRowBlock);
        for (int k0 = 0; k0 < n; k0 += 4) {
            switch (std::min(4, n - k0)) {
                case 1: gemv_rows<V, 1>(w, cols, xs + k0, ys + k0, r0, r1, bias, accumulate); break;
                case 2: gemv_rows<V, 2>(w, cols, xs + k0, ys + k0, r0, r1, bias, accumulate); break;
                case 3: gemv_rows<V, 3>(w, cols, xs + k0, ys + k0, r0, r1, bias, accumulate); break;
                default: gemv_rows<V, 4>(w, cols, xs + k0, ys + k0, r0, r1, bias, accumulate); break;
            }
        }
    }
}

using GemvFn = void (*)(const float*, int64_t, int64_t, const float* const*, float* const*, int, const float*, bool);

void gemv_generic(const float* w, int64_t rows, int64_t cols, const float* const* xs, float* const* ys, int n,
                  const float* bias, bool accumulate) {
    gemv_impl<V4>(w, rows, cols, xs, ys, n, bias, accumulate);
}

#ifdef POLYASR_X86_DISPATCH
__attribute__((target("avx2,fma"))) void gemv_avx2(const float* w, int64_t rows, int64_t cols,
                                                    const float* const* xs, float* const* ys, int n,
                                                    const float* bias, bool accumulate) {
    gemv_impl<V8>(w, rows, cols, xs, ys, n, bias, accumulate);
}
#endif

bool has_avx2() {
#ifdef POLYASR_X86_DISPATCH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

GemvFn pick_gemv() {
#ifdef POLYASR_X86_DISPATCH
    if (has_avx2()) return gemv_avx2;
#endif
    return gemv_generic;
}

const GemvFn gemv = pick_gemv();

int64_t argmax(const float* x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i) {
        if (x[i] > x[best]) best = i;  // the first maximum wins, as numpy/torch argmax
    }
    return best;
}

// softmax(logits[0, n))[k], where logits[k] is the maximum.
float confidence(const float* logits, int64_t n, int64_t k) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - logits[k]);
    return static_cast<float>(1.0 / sum);
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// One LSTM cell update from its pre-activations (gate rows i, f, g, o), in place.
void lstm_cell(const float* gates, float* h, float* c, int64_t p) {
    for (int64_t j = 0; j < p; ++j) {
        const float i = sigmoid(gates[j]), f = sigmoid(gates[p + j]);
        const float g = std::tanh(gates[2 * p + j]), o = sigmoid(gates[3 * p + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * std::tanh(c[j]);
    }
}

// One item's decoding state and emissions; the float buffers point into its group's workspace.
struct Item {
    int64_t index = 0, length = 0, t = 0, run = 0;
    float *h = nullptr, *c = nullptr, *gates = nullptr, *pred = nullptr, *joint_in = nullptr, *logits = nullptr;
    std::vector<int32_t> tokens, frames, durations;
    std::vector<float> confidences;
};

// Items decoded in lockstep, with the buffers every step reuses (nothing is allocated per step).
struct Group {
    Group(const TdtWeights& w, const float* enc, int64_t n_frames, int64_t blank, int64_t max_symbols)
        : w(w), enc(enc), n_frames(n_frames), blank(blank), max_symbols(max_symbols) {}

    const TdtWeights& w;
    const float* enc;  // (batch, n_frames, J)
    int64_t n_frames, blank, max_symbols;
    std::vector<Item*> items;
    std::vector<float> workspace;
    std::vector<const float*> xs, inputs;
    std::vector<float*> ys;
    std::vector<Item*> active, fed;

    void allocate() {
        const int64_t P = w.hidden, L = w.n_layers, J = w.joint;
        const int64_t per_item = 2 * L * P + 4 * P + 2 * J + w.n_tokens + w.n_durations;
        workspace.assign(items.size() * per_item, 0.0f);  // h = c = 0: the predictor's initial state
        float* p = workspace.data();
        for (Item* it : items) {
            it->h = p, it->c = p + L * P, it->gates = p + 2 * L * P, it->pred = it->gates + 4 * P;
            it->joint_in = it->pred + J, it->logits = it->joint_in + J;
            p += per_item;
        }
        xs.resize(items.size()), inputs.resize(items.size()), ys.resize(items.size());
        active.reserve(items.size()), fed.reserve(items.size());
    }

    // The predictor (LSTM, then the joint's prediction linear) on fed[k] with input rows inputs[k].
    void predict() {
        const int n = static_cast<int>(fed.size());
        const int64_t P = w.hidden, G = 4 * P, L = w.n_layers;
        for (int64_t l = 0; l < L; ++l) {
            for (int k = 0; k < n; ++k) xs[k] = l == 0 ? inputs[k] : fed[k]->h + (l - 1) * P, ys[k] = fed[k]->gates;
            gemv(w.w_ih + l * G * P, G, P, xs.data(), ys.data(), n, w.bias + l * G, false);
            for (int k = 0; k < n; ++k) xs[k] = fed[k]->h + l * P;
            gemv(w.w_hh + l * G * P, G, P, xs.data(), ys.data(), n, nullptr, true);
            for (Item* it : fed) lstm_cell(it->gates, it->h + l * P, it->c + l * P, P);
        }
        for (int k = 0; k < n; ++k) xs[k] = fed[k]->h + (L - 1) * P, ys[k] = fed[k]->pred;
        gemv(w.pred_w, w.joint, P, xs.data(), ys.data(), n, w.pred_b, false);
    }

    // Token and duration logits of every active item at its current frame.
    void joint() {
        const int64_t J = w.joint;
        for (size_t k = 0; k < active.size(); ++k) {
            Item& it = *active[k];
            const float* e = enc + (it.index * n_frames + it.t) * J;
            for (int64_t j = 0; j < J; ++j) it.joint_in[j] = std::max(e[j] + it.pred[j], 0.0f);
            xs[k] = it.joint_in, ys[k] = it.logits;
        }
        gemv(w.out_w, w.n_tokens + w.n_durations, J, xs.data(), ys.data(), static_cast<int>(active.size()), w.out_b,
             false);
    }

    // Takes the step the item's logits decide; returns the emitted token, or -1 for a blank.
    int64_t advance(Item& it) const {
        const int64_t k = argmax(it.logits, w.n_tokens);
        const int64_t d = w.durations[argmax(it.logits + w.n_tokens, w.n_durations)];
        if (k == blank) {
            it.t += std::max<int64_t>(d, 1), it.run = 0;  // a blank never stays on its frame
            return -1;
        }
        it.tokens.push_back(static_cast<int32_t>(k));
        it.frames.push_back(static_cast<int32_t>(it.t));
        it.durations.push_back(static_cast<int32_t>(d));
        it.confidences.push_back(confidence(it.logits, w.n_tokens, k));
        if (d > 0) {
            it.t += d, it.run = 0;
        } else if (++it.run >= max_symbols) {
            it.t += 1, it.run = 0;  // forced advance after max_symbols tokens at one frame
        }
        return k;
    }

    void decode() {
        if (items.empty()) return;
        allocate();
        fed = items;  // the start symbol is the blank row
        std::fill(inputs.begin(), inputs.end(), w.embed + blank * w.hidden);
        predict();
        active = items;
        while (!active.empty()) {
            joint();
            fed.clear();
            for (Item* it : active) {
                const int64_t token = advance(*it);
                // A finished item's next predictor state would never be used.
                if (token >= 0 && it->t < it->length) inputs[fed.size()] = w.embed + token * w.hidden, fed.push_back(it);
            }
            if (!fed.empty()) predict();
            active.erase(std::remove_if(active.begin(), active.end(), [](Item* it) { return it->t >= it->length; }),
                         active.end());
        }
    }
};

void concatenate(std::vector<Item>& items, TdtBatchResult& out) {
    out = TdtBatchResult();
    size_t total = 0;
    for (const Item& it : items) total += it.tokens.size();
    out.tokens.reserve(total), out.frames.reserve(total), out.durations.reserve(total), out.confidences.reserve(total);
    out.offsets.assign(1, 0);
    for (const Item& it : items) {
        out.tokens.insert(out.tokens.end(), it.tokens.begin(), it.tokens.end());
        out.frames.insert(out.frames.end(), it.frames.begin(), it.frames.end());
        out.durations.insert(out.durations.end(), it.durations.begin(), it.durations.end());
        out.confidences.insert(out.confidences.end(), it.confidences.begin(), it.confidences.end());
        out.offsets.push_back(static_cast<int64_t>(out.tokens.size()));
    }
}

void run_groups(std::vector<Group>& groups) {
    if (groups.size() == 1) return groups[0].decode();
    std::vector<std::exception_ptr> errors(groups.size());
    std::vector<std::thread> threads;
    for (size_t g = 0; g < groups.size(); ++g) {
        threads.emplace_back([&groups, &errors, g] {
            try {
                groups[g].decode();
            } catch (...) {
                errors[g] = std::current_exception();
            }
        });
    }
    for (std::thread& th : threads) th.join();
    for (const std::exception_ptr& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

}  // namespace

const char* tdt_kernel_isa() { return gemv == gemv_generic ? "generic" : "avx2+fma"; }

void tdt_greedy_decode(const float* enc_proj, int64_t batch, int64_t n_frames, const int64_t* lengths,
                       const TdtWeights& w, int64_t blank, int64_t max_symbols, int n_threads, TdtBatchResult& out) {
    std::vector<Item> items(batch);
    std::vector<Item*> todo;  // items with frames, longest first so that round-robin groups balance
    for (int64_t b = 0; b < batch; ++b) {
        items[b].index = b, items[b].length = lengths[b];
        if (lengths[b] > 0) todo.push_back(&items[b]);
    }
    std::stable_sort(todo.begin(), todo.end(), [](Item* a, Item* b) { return a->length > b->length; });
    if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const size_t n_groups = std::min(static_cast<size_t>(n_threads), std::max<size_t>(todo.size(), 1));
    std::vector<Group> groups;
    for (size_t g = 0; g < n_groups; ++g) groups.emplace_back(w, enc_proj, n_frames, blank, max_symbols);
    for (size_t i = 0; i < todo.size(); ++i) groups[i % n_groups].items.push_back(todo[i]);
    run_groups(groups);
    concatenate(items, out);
}

}  // namespace polyasr
