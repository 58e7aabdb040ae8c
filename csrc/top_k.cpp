#include "top_k.h"

namespace polyasr {

namespace {

// Inserts (v, j) into the sorted prefix value[0..filled) (descending; equal values keep the order
// they came in, so the lower index stays first), dropping the last entry when it is full.
void insert(float v, int64_t j, int64_t k, int64_t filled, int64_t* index, float* value) {
    int64_t at = filled < k ? filled : k - 1;
    while (at > 0 && value[at - 1] < v) {
        value[at] = value[at - 1];
        index[at] = index[at - 1];
        --at;
    }
    value[at] = v;
    index[at] = j;
}

}  // namespace

void top_k_rows(const float* scores, int64_t rows, int64_t n, int64_t k, int64_t* index, float* value) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* x = scores + r * n;
        int64_t* idx = index + r * k;
        float* val = value + r * k;
        int64_t j = 0;
        for (; j < k; ++j) insert(x[j], j, k, j, idx, val);
        // Once full, only a strictly larger score gets in: a tie with the last kept one has a higher index.
        float last = val[k - 1];
        for (; j < n; ++j) {
            if (x[j] > last) {
                insert(x[j], j, k, k, idx, val);
                last = val[k - 1];
            }
        }
    }
}

}  // namespace polyasr
