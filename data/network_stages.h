// Where segment's network phase spends its time: shared by the pipeline that
// measures it (data/segment_pipeline.h) and the report that shows it (data/report.h).
#pragma once
#include <cstdint>

namespace covidrate::data {

// The network phase's loop, as the main thread spends it (seconds summed over
// batches): waiting for a batch's inputs to be prepared (the first batch is
// never overlapped); queuing the copy to the device (upload), the forward pass
// (forward), the certainty index and the copies back (download); waiting for
// the device to finish a batch (device_wait); and waiting for the previous
// batch to be put back on the slice grid. On the CPU queuing is computing, so
// `forward` is the forward pass and device_wait is 0; on a GPU `forward` is the
// time to launch its kernels and device_wait holds the rest of the device's
// time that the host could not hide. The rest of the phase is bookkeeping.
struct NetworkStages {
  double prepare_wait = 0, upload = 0, forward = 0, download = 0, device_wait = 0, put_back_wait = 0;
  // Not a time: the convolution algorithm searches the forward passes ran
  // (algorithm_searches in nn/device.h; their time is inside `forward`).
  uint64_t algorithm_searches = 0;
  // Nor this: blocks the device's memory cache took from the system during the
  // phase (device_system_allocations in nn/device.h; 0 on the CPU).
  uint64_t system_allocations = 0;
  NetworkStages& operator+=(const NetworkStages& o) {
    prepare_wait += o.prepare_wait, upload += o.upload, forward += o.forward, download += o.download;
    device_wait += o.device_wait, put_back_wait += o.put_back_wait;
    algorithm_searches += o.algorithm_searches;
    system_allocations += o.system_allocations;
    return *this;
  }
};

}  // namespace covidrate::data
