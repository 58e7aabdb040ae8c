// CTC greedy collapse: merge repeated labels, drop blanks, keep the frame of each emitted token.
#pragma once

#include <cstdint>
#include <vector>

namespace polyasr {

// What one batch decodes to: tokens and frames of every item back to back, item i spanning
// [offsets[i], offsets[i + 1]).
struct CtcBatchResult {
    std::vector<int32_t> tokens;
    std::vector<int32_t> frames;
    std::vector<int64_t> offsets;
};

// ids: (batch, frames) row-major label ids (argmax already taken).
template <typename Id>
void ctc_collapse_ids(const Id* ids, int64_t batch, int64_t n_frames, const int64_t* lengths, int64_t blank,
                      CtcBatchResult& out);

// logits: (batch, frames, vocab) row-major scores; the argmax of each frame is collapsed.
void ctc_collapse_logits(const float* logits, int64_t batch, int64_t n_frames, int64_t vocab, const int64_t* lengths,
                         int64_t blank, CtcBatchResult& out);

}  // namespace polyasr
