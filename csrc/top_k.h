// The k largest scores of each row, for beam search: one pass per row, independent of how many
// scores tie (a partial sort degenerates when most of a row is -inf, as Whisper's rules leave it).
#pragma once

#include <cstdint>

namespace polyasr {

// scores: (rows, n) row-major; writes each row's k best (k <= n) to index / value (rows, k),
// best first, equal scores in index order. Scores must not be NaN.
void top_k_rows(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* index, float* value);

}  // namespace polyasr
