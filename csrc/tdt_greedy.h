// TDT (token-and-duration transducer) greedy decoding: the label-looping loop of NeMo's greedy TDT
// decoder and transformers' ParakeetForTDT.generate, over a precomputed encoder projection.
//
// Per item: the LSTM predictor starts from zeros fed the blank row (the start symbol). At frame t the
// joint gives logits = out_w relu(enc_proj[t] + pred_w g + pred_b) + out_b; the token is the argmax of
// logits[0, V1), the duration durations[argmax logits[V1, V1 + D)]. A blank moves t by max(d, 1) and
// keeps the predictor state; a token is emitted, fed to the predictor, and moves t by d, where d = 0
// keeps t unless max_symbols tokens in a row were emitted at t (then t moves by one).
#pragma once

#include <cstdint>
#include <vector>

namespace polyasr {

// Row-major float32 weights, torch conventions; shapes with V1 = tokens incl. blank, P = predictor
// width, L = LSTM layers, J = joint width, D = number of durations.
struct TdtWeights {
    const float* embed;      // (V1, P)
    const float* w_ih;       // (L, 4P, P), gate rows i, f, g, o
    const float* w_hh;       // (L, 4P, P)
    const float* bias;       // (L, 4P) = b_ih + b_hh
    const float* pred_w;     // (J, P)
    const float* pred_b;     // (J,)
    const float* out_w;      // (V1 + D, J)
    const float* out_b;      // (V1 + D,)
    const int64_t* durations;  // (D,), each >= 0
    int64_t n_tokens, hidden, n_layers, joint, n_durations;  // V1, P, L, J, D
};

// Every item's emissions back to back; item i spans [offsets[i], offsets[i + 1]).
struct TdtBatchResult {
    std::vector<int32_t> tokens;
    std::vector<int32_t> frames;
    std::vector<int32_t> durations;
    std::vector<float> confidences;  // softmax(token logits)[token]
    std::vector<int64_t> offsets;
};

// enc_proj: (batch, n_frames, J) row-major; lengths: (batch,) in [0, n_frames]. Items are decoded in
// lockstep groups (one pass over the joint weights serves every item of a group); n_threads > 1
// decodes that many groups on their own threads. Results do not depend on grouping or threads.
void tdt_greedy_decode(const float* enc_proj, int64_t batch, int64_t n_frames, const int64_t* lengths,
                       const TdtWeights& w, int64_t blank, int64_t max_symbols, int n_threads, TdtBatchResult& out);

// The matrix-vector kernel in use: "avx2+fma" or "generic" (reported by the bench).
const char* tdt_kernel_isa();

}  // namespace polyasr
