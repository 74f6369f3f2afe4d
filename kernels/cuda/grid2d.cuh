// Launch shape for kernels over (rows, columns) of an NCHW image stack, where
// a thread owns one column of one row: 32 threads across the columns (one warp
// reads one coalesced run of a row), 8 rows per block, and the rows folded
// into a grid-stride loop beyond 65535 row blocks (the grid's y limit).
#pragma once
#include <cstdint>

#include "kernels/cuda/cuda_common.h"

namespace covidrate::cuda {

struct Grid2d {
  dim3 grid, block;
};

inline Grid2d grid2d(int64_t rows, int64_t cols) {
  constexpr unsigned kCols = 32, kRows = 8;
  const int64_t gx = (cols + kCols - 1) / kCols;
  CR_CHECK(gx <= 0x7fffffff, "grid2d: " << cols << " columns are too many for one launch");
  int64_t gy = (rows + kRows - 1) / kRows;
  if (gy > 65535) gy = 65535;
  if (gy < 1) gy = 1;
  return {dim3(static_cast<unsigned>(gx > 0 ? gx : 1), static_cast<unsigned>(gy)), dim3(kCols, kRows)};
}

inline bool aligned8(const void* p) { return reinterpret_cast<uintptr_t>(p) % 8 == 0; }

}  // namespace covidrate::cuda
