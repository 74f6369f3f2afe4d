// The certainty index of a predicted lesion map (Enshaei et al. 2022, the
// unsupervised enhancement of COVID-Rate): among the pixels the network calls
// lesion with some conviction (probability above a cut-off, 0.3 in the paper),
// how sure it is on average. Confident lesions score high, a map full of
// hesitant 0.4s low, and a map with no pixel above the cut-off 0 (nothing to be
// sure of: such a slice is never kept). Used to pick which predictions on
// unlabelled slices are trusted as pseudo-labels (data/pseudo_labels.h).
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void certainty_index(const Tensor& p, double cutoff, Tensor& ci) {
  const int64_t images = p.shape()[0], per_image = p.numel() / images;
  with_dtype(p, [&]<class T>() {
    const T* prob = p.data<T>();
    T* out = ci.data<T>();
    // Compared in the data's precision: a float 0.3 is not above a cut-off of 0.3.
    const T above = static_cast<T>(cutoff);
    parallel_for(images, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        double sum = 0;
        int64_t count = 0;
        for (const T* x = prob + n * per_image; x != prob + (n + 1) * per_image; ++x)
          if (*x > above) sum += *x, ++count;  // NaN is never above: not counted
        out[n] = static_cast<T>(count > 0 ? sum / static_cast<double>(count) : 0.0);
      }
    });
  });
}

}  // namespace covidrate::cpu
