#include "ctc_greedy.h"

namespace polyasr {

namespace {

// Appends one item's emissions: a label is emitted when it differs from the previous frame's
// label and is not blank (a blank between two equal labels therefore separates them).
template <typename Label>
void collapse_row(Label label_at, int64_t length, int64_t blank, CtcBatchResult& out) {
    int64_t prev = -1;
    for (int64_t t = 0; t < length; ++t) {
        const int64_t id = label_at(t);
        if (id != prev && id != blank) {
            out.tokens.push_back(static_cast<int32_t>(id));
            out.frames.push_back(static_cast<int32_t>(t));
        }
        prev = id;
    }
    out.offsets.push_back(static_cast<int64_t>(out.tokens.size()));
}

}  // namespace

template <typename Id>
void ctc_collapse_ids(const Id* ids, int64_t batch, int64_t n_frames, const int64_t* lengths, int64_t blank,
                      CtcBatchResult& out) {
    out.offsets.assign(1, 0);
    for (int64_t b = 0; b < batch; ++b) {
        const Id* row = ids + b * n_frames;
        collapse_row([row](int64_t t) { return static_cast<int64_t>(row[t]); }, lengths[b], blank, out);
    }
}

template void ctc_collapse_ids<int32_t>(const int32_t*, int64_t, int64_t, const int64_t*, int64_t, CtcBatchResult&);
template void ctc_collapse_ids<int64_t>(const int64_t*, int64_t, int64_t, const int64_t*, int64_t, CtcBatchResult&);

void ctc_collapse_logits(const float* logits, int64_t batch, int64_t n_frames, int64_t vocab, const int64_t* lengths,
                         int64_t blank, CtcBatchResult& out) {
    out.offsets.assign(1, 0);
    for (int64_t b = 0; b < batch; ++b) {
        const float* item = logits + b * n_frames * vocab;
        auto argmax = [item, vocab](int64_t t) {
            const float* frame = item + t * vocab;
            int64_t best = 0;
            for (int64_t v = 1; v < vocab; ++v) {
                if (frame[v] > frame[best]) best = v;  // first maximum wins, as numpy/torch argmax
            }
            return best;
        };
        collapse_row(argmax, lengths[b], blank, out);
    }
}

}  // namespace polyasr
