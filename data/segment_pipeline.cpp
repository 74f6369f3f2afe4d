#include "data/segment_pipeline.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <utility>

#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/prepare.h"
#include "kernels/cpu/threads.h"
#include "kernels/ops.h"
#include "nn/autograd.h"
#include "nn/error.h"
#include "nn/host_buffer.h"

namespace covidrate::data {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs fn(i) for i in [0, n) on the CPU pool; the first exception any call
// threw is rethrown here once all are done (the pool's bodies must not throw).
void for_each_in_parallel(int64_t n, const std::function<void(int64_t)>& fn) {
  std::mutex mu;
  std::exception_ptr failure;
  cpu::parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failure) failure = std::current_exception();
        return;
      }
    }
  });
  if (failure) std::rethrow_exception(failure);
}

}  // namespace

std::vector<int64_t> network_layout_order(const Volume& v, int64_t& out_nx, int64_t& out_ny) {
  // Pixel indices below 2^24 are exact in float32 (a 4096 x 4096 slice).
  CR_CHECK(v.nx * v.ny < (int64_t{1} << 24), "segment: slice of " << v.nx << " x " << v.ny << " is too large");
  // One slice's grid: copying v (all of its voxels) to keep one slice was a
  // 267 MB temporary at segment's peak memory for a 255-slice study.
  Volume index = same_grid(v, v.intensity, 0.f, 1);
  for (int64_t i = 0; i < v.nx * v.ny; ++i) index.voxels[i] = static_cast<float>(i);
  const Volume laid_out = medseg_layout(radiological_slice(index, 0));
  out_nx = laid_out.nx;
  out_ny = laid_out.ny;
  std::vector<int64_t> order(laid_out.voxels.size());
  for (size_t p = 0; p < order.size(); ++p) order[p] = static_cast<int64_t>(laid_out.voxels[p]);
  return order;
}

CropBox lung_crop_box(const float* lungs, int64_t nx, int64_t ny, double margin) {
  int64_t x0 = nx, y0 = ny, x1 = -1, y1 = -1;
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x)
      if (lungs[y * nx + x] != 0.f) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  if (x1 < 0 || margin < 0) return {0, 0, nx, ny};
  const auto widen = [margin](int64_t lo, int64_t hi, int64_t n, int64_t& out_lo, int64_t& out_n) {
    const auto extra = static_cast<int64_t>(std::lround(margin * static_cast<double>(hi - lo + 1)));
    out_lo = std::max<int64_t>(0, lo - extra);
    out_n = std::min(n, hi + 1 + extra) - out_lo;
  };
  CropBox box;
  widen(x0, x1, nx, box.x0, box.nx);
  widen(y0, y1, ny, box.y0, box.ny);
  return box;
}

NetworkView network_view(const Volume& ct, const LabelVolume& lungs, const std::vector<int64_t>& slices,
                         double crop_margin) {
  NetworkView view;
  // Every slice of a volume shares the grid, so one permutation serves all.
  view.order = network_layout_order(ct, view.nx, view.ny);
  const int64_t pixels = ct.nx * ct.ny;

  // One box for the whole volume: where any of the slices has lung. Only when
  // both lungs were found: a box around one lung would magnify it to twice the
  // training pictures' scale, so then the whole slice goes in, as without the cut.
  // Slices in parallel, each chunk of them into a mask of its own in the grid's
  // order (a serial pass through the layout permutation took 0.1 s here), merged.
  const int64_t chunks = cpu::chunk_count(static_cast<int64_t>(slices.size()), 1);
  std::vector<std::vector<uint8_t>> any_lung(static_cast<size_t>(chunks));
  std::vector<uint8_t> sides(static_cast<size_t>(chunks), 0);  // bit 1: right lung seen, bit 2: left
  cpu::parallel_chunks(static_cast<int64_t>(slices.size()), chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
    std::vector<uint8_t>& any = any_lung[static_cast<size_t>(chunk)];
    any.assign(static_cast<size_t>(pixels), 0);
    uint8_t seen = 0;
    for (int64_t k = begin; k < end; ++k) {
      const uint8_t* lung = lungs.slice(slices[static_cast<size_t>(k)]);
      for (int64_t i = 0; i < pixels; ++i) {
        any[static_cast<size_t>(i)] |= lung[i] != kNoLung;
        seen |= static_cast<uint8_t>((lung[i] == kRightLung) | (lung[i] == kLeftLung) << 1);
      }
    }
    sides[static_cast<size_t>(chunk)] = seen;
  });
  std::vector<float> lung_layout(pixels, 0.f);
  for (const std::vector<uint8_t>& any : any_lung)
    for (int64_t p = 0; p < pixels; ++p)
      if (any[static_cast<size_t>(view.order[p])]) lung_layout[p] = 1.f;
  bool right = false, left = false;
  for (const uint8_t seen : sides) right |= (seen & 1) != 0, left |= (seen & 2) != 0;
  view.box = lung_crop_box(lung_layout.data(), view.nx, view.ny, right && left ? crop_margin : -1.0);
  return view;
}

Placement network_input(const float* slice, const NetworkView& view, int64_t size, float* input) {
  const CropBox& box = view.box;
  Volume picture;  // the box of the slice, as the network saw its training pictures
  picture.nx = box.nx;
  picture.ny = box.ny;
  picture.nz = 1;
  picture.intensity = Intensity::Picture8Bit;
  picture.voxels.resize(box.nx * box.ny);
  for (int64_t y = 0; y < box.ny; ++y)
    for (int64_t x = 0; x < box.nx; ++x)
      picture.voxels[y * box.nx + x] = slice[view.order[(box.y0 + y) * view.nx + box.x0 + x]];
  const PreparedSlice prepared = prepare_slice(picture, nullptr, nullptr, size);
  std::copy(prepared.image.begin(), prepared.image.end(), input);
  return prepared.placement;
}

void put_back_slice(const float* prediction, const Placement& placement, const NetworkView& view,
                    const uint8_t* lungs, double threshold, uint8_t* lesion, float* probability) {
  const CropBox& box = view.box;
  const std::vector<float> p = to_original_grid(prediction, placement);
  for (int64_t y = 0; y < box.ny; ++y)
    for (int64_t x = 0; x < box.nx; ++x) {
      // Bilinear weights sum to 1 only up to rounding.
      const float v = std::clamp(p[y * box.nx + x], 0.f, 1.f);
      const int64_t i = view.order[(box.y0 + y) * view.nx + box.x0 + x];
      if (probability) probability[i] = v;
      lesion[i] = v > threshold && lungs[i] != kNoLung;
    }
}

VolumeLungs extract_volume_lungs(const Volume& ct) {
  CR_CHECK(ct.nx > 0 && ct.ny > 0 && ct.nz > 0 && ct.voxels.size() == static_cast<size_t>(ct.voxel_count()),
           "segment: " << ct.source << " holds no image");
  // A test pattern or a thumbnail, not a chest slice (the smallest training picture is 153 pixels a side):
  // the lung extractor would still find "lungs" in it, and the figures would mean nothing.
  CR_CHECK(ct.nx >= kMinSliceSide && ct.ny >= kMinSliceSide,
           "segment: " << ct.source << " has slices of " << ct.nx << " x " << ct.ny << " pixels, too small for a "
                       << "chest CT (at least " << kMinSliceSide << " x " << kMinSliceSide << ")");
  VolumeLungs out;
  out.domain = to_input_domain(ct);  // refuses labels and scanner units
  const auto start = Clock::now();
  out.lungs = ClassicalLungExtractor().extract(ct, out.domain);
  out.seconds = seconds_since(start);
  return out;
}

namespace {
void check_segment_options(const SegmentationNet& net, const SegmentOptions& options) {
  CR_CHECK(options.threshold >= 0 && options.threshold <= 1,
           "segment: threshold must be in [0, 1], got " << options.threshold);
  CR_CHECK(options.batch >= 1, "segment: batch must be at least 1, got " << options.batch);
  CR_CHECK(net.compute_dtype() == options.precision,
           "segment: the network computes in " << to_string(net.compute_dtype()) << ", the options ask for "
                                               << to_string(options.precision)
                                               << " (prepare its inference form in that precision)");
}
}  // namespace

int64_t batch_shape(int64_t count, int64_t batch) {
  CR_CHECK(count >= 1 && count <= batch, "batch_shape: " << count << " slices do not fit a batch of " << batch);
  return std::min<int64_t>(batch, static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(count))));
}

Segmentation segment_volume(const Volume& ct, const SegmentationNet& net, const SegmentOptions& options) {
  check_segment_options(net, options);  // before the lungs' work, not after
  return segment_volume(ct, extract_volume_lungs(ct), net, options);
}

Segmentation segment_volume(const Volume& ct, VolumeLungs prepared, const SegmentationNet& net,
                            const SegmentOptions& options) {
  check_segment_options(net, options);
  CR_CHECK(prepared.domain.nx == ct.nx && prepared.domain.ny == ct.ny && prepared.domain.nz == ct.nz &&
               prepared.lungs.labels.voxels.size() == static_cast<size_t>(ct.voxel_count()),
           "segment: the prepared lungs are not those of " << ct.source);
  const Volume& domain = prepared.domain;

  Segmentation result;
  result.lungs = std::move(prepared.lungs.labels);
  result.slice_has_lung = std::move(prepared.lungs.slice_has_lung);
  result.seconds.lungs = prepared.seconds;

  // The output volumes (67 and 268 MB for 512 x 512 x 255) are allocated and
  // zero-filled on a thread of their own while the lung box is found and the
  // first batch runs: one serial pass of page faults (0.1 s here) that held up
  // the network. Taken before the first batch is put back.
  struct Outputs {
    LabelVolume lesions;
    Volume probability;
  };
  std::future<Outputs> outputs = std::async(std::launch::async, [&ct, keep = options.keep_probability] {
    Outputs o;
    if (keep) {
      o.probability = same_grid(ct, Intensity::Picture8Bit);
      o.probability.description = "lesion probability";
    }
    o.lesions = same_grid<uint8_t>(ct, Intensity::Label);
    o.lesions.description = "lesion mask";
    return o;
  });
  const auto take_outputs = [&] {
    Outputs o = outputs.get();
    result.lesions = std::move(o.lesions);
    result.probability = std::move(o.probability);
  };

  std::vector<int64_t> todo;
  for (int64_t z = 0; z < ct.nz; ++z)
    if (result.slice_has_lung[z]) todo.push_back(z);
  result.slices_segmented = static_cast<int64_t>(todo.size());
  result.certainty.assign(static_cast<size_t>(ct.nz), std::numeric_limits<float>::quiet_NaN());
  const NetworkView view = network_view(ct, result.lungs, todo, options.crop_margin);
  const int64_t size = options.size;

  // One batch of network inputs, prepared on the CPU pool (slices are
  // independent); the next batch is prepared on a second thread while the
  // network runs on the current one (on a GPU the serial per-slice CPU work
  // took longer than the forward pass itself). Inputs and probabilities cross
  // to the device through staging buffers (pinned on a GPU; nn/host_buffer.h),
  // written and read in place.
  struct Batch {
    size_t first = 0;
    int64_t count = 0;  // slices of the study in it
    int64_t shape = 0;  // images the forward pass takes: count, or batch_shape(count) when bucketed
    HostBuffer input;
    std::vector<Placement> placements;
  };
  const auto prepare_batch = [&](size_t first) {
    Batch b;
    b.first = first;
    b.count = std::min<int64_t>(options.batch, static_cast<int64_t>(todo.size() - first));
    b.shape = options.bucketed_batch_shape ? batch_shape(b.count, options.batch) : b.count;
    b.input = HostBuffer(b.shape * size * size, options.device);
    std::fill(b.input.data() + b.count * size * size, b.input.data() + b.input.size(), 0.f);  // the blanks
    b.placements.resize(b.count);
    for_each_in_parallel(b.count, [&](int64_t k) {
      b.placements[k] = network_input(domain.slice(todo[first + k]), view, size, b.input.data() + k * size * size);
    });
    return b;
  };

  const auto start = Clock::now();
  // A batch's probabilities back on the slice grid, thresholded inside the lungs.
  // Outside the box the network saw nothing: probability 0, as on slices without lung.
  const auto put_back = [&](const Batch& b, const HostBuffer& probabilities) {
    for_each_in_parallel(b.count, [&](int64_t k) {
      const int64_t z = todo[b.first + k];
      put_back_slice(probabilities.data() + k * size * size, b.placements[k], view, result.lungs.slice(z),
                     options.threshold, result.lesions.slice(z),
                     options.keep_probability ? result.probability.slice(z) : nullptr);
    });
  };

  // Three stages overlap: batch i + 1 is prepared and batch i - 1 put back on
  // two other threads while the network runs batch i. Each batch touches only
  // its own slices, so the stages share nothing but the finished volumes.
  //
  // On a GPU the device's queue holds two batches: batch i's upload, forward
  // pass, certainty and copies back are queued (which returns once the kernels
  // are launched), and only then does the loop wait for batch i - 1's results.
  // So the device goes from one batch to the next without waiting for the
  // host: while it computes batch i, the host collects batch i - 1, hands it to
  // putting back and waits for batch i + 1's inputs. On the CPU, where queuing
  // is computing, each batch is collected as soon as it is launched.
  const bool queue_ahead = options.queue_ahead.value_or(options.device != Device::CPU);
  if (options.progress) options.progress(0, result.slices_segmented);
  std::future<Batch> next;
  std::future<size_t> putting_back;  // the slice count done once it finishes
  const auto finish_put_back = [&] {
    const size_t done = putting_back.get();  // rethrows what putting back threw
    if (options.progress) options.progress(static_cast<int64_t>(done), result.slices_segmented);
  };
  // The main thread's time in each step of the loop, summed over batches
  // (NetworkStages): where the network phase goes beyond the forward pass.
  NetworkStages& stages = result.seconds.network_stages;
  const auto timed = [](double& total, auto&& step) {
    const auto t = Clock::now();
    step();
    total += seconds_since(t);
  };
  // A batch in the device's queue: everything its queued work reads or writes.
  // Its buffers go back to their caches (where the next batch may get them)
  // only after `done` has been waited for, also when an error leaves it behind.
  struct InFlight {
    Batch batch;                              // its pinned input, read by the upload
    Tensor input, output, certainty;          // on the device
    HostBuffer probabilities, certainty_host;  // written by the copies back
    DeviceFence done;
    InFlight() = default;
    InFlight(InFlight&&) = default;
    InFlight& operator=(InFlight&&) = delete;  // would free the target's buffers unwaited
    ~InFlight() {
      try {
        done.wait();
      } catch (...) {  // a failed device: nothing more to protect
      }
    }
  };
  const auto launch = [&](Batch b) {
    InFlight f;
    f.batch = std::move(b);
    const Batch& batch = f.batch;
    ag::NoGrad no_grad;
    try {
      timed(stages.upload, [&] {
        f.input = Tensor::empty({batch.shape, 1, size, size}, DType::F32, options.device);
        copy_bytes_async(f.input.raw(), options.device, batch.input.data(), Device::CPU, batch.input.bytes());
      });
      timed(stages.forward, [&] { f.output = net.forward(ag::Var(f.input)).value(); });
      timed(stages.download, [&] {
        const Tensor& output = f.output;
        CR_CHECK(output.dtype() == DType::F32 && output.numel() == batch.input.size() &&
                     output.device() == options.device,
                 "segment: the network returned " << output.str() << " for a batch of " << batch.shape);
        f.probabilities = HostBuffer(batch.count * size * size, options.device);  // not the blanks'
        copy_bytes_async(f.probabilities.data(), Device::CPU, output.raw(), options.device,
                         f.probabilities.bytes());
        // How sure the network is of each slice's lesions, reduced where the batch is.
        f.certainty = Tensor::empty({batch.shape}, DType::F32, options.device);
        ops::certainty_index(output, kPaperCertaintyCutoff, f.certainty);
        f.certainty_host = HostBuffer(batch.shape, options.device);
        copy_bytes_async(f.certainty_host.data(), Device::CPU, f.certainty.raw(), options.device,
                         f.certainty_host.bytes());
        f.done = DeviceFence(options.device);
      });
    } catch (...) {
      // Copies may be queued without the fence that InFlight waits for: wait
      // for the whole queue before the buffers go back to their caches.
      try {
        synchronize(options.device);
      } catch (...) {
      }
      throw;
    }
    return f;
  };
  // Waits for a launched batch and hands its probabilities to putting back;
  // its device tensors go back to the cache here, once the wait is over.
  const auto collect = [&](InFlight f) {
    timed(stages.device_wait, [&] { f.done.wait(); });
    const Batch& b = f.batch;
    for (int64_t k = 0; k < b.count; ++k) result.certainty[todo[b.first + k]] = f.certainty_host.data()[k];
    if (putting_back.valid()) timed(stages.put_back_wait, finish_put_back);
    if (outputs.valid()) timed(stages.put_back_wait, take_outputs);  // put back writes into them
    const size_t after = b.first + static_cast<size_t>(b.count);
    putting_back = std::async(std::launch::async, [&put_back, batch = std::move(f.batch),
                                                   probabilities = std::move(f.probabilities), after] {
      put_back(batch, probabilities);
      return after;
    });
  };

  const uint64_t searches_before = algorithm_searches(options.device);
  const uint64_t allocations_before = device_system_allocations(options.device);
  if (!todo.empty()) next = std::async(std::launch::async, prepare_batch, size_t{0});
  std::optional<InFlight> queued;  // launched, not yet collected (GPU only)
  while (next.valid()) {
    Batch b;
    timed(stages.prepare_wait, [&] { b = next.get(); });  // rethrows what preparing it threw
    const size_t after = b.first + static_cast<size_t>(b.count);
    if (after < todo.size()) next = std::async(std::launch::async, prepare_batch, after);
    InFlight launched = launch(std::move(b));
    if (queued) collect(*std::exchange(queued, std::nullopt));
    if (queue_ahead) {
      queued.emplace(std::move(launched));
    } else {
      collect(std::move(launched));
    }
  }
  if (queued) collect(*std::exchange(queued, std::nullopt));
  if (putting_back.valid()) timed(stages.put_back_wait, finish_put_back);
  if (outputs.valid()) take_outputs();  // no slice held lung
  result.seconds.network = seconds_since(start);
  stages.algorithm_searches = algorithm_searches(options.device) - searches_before;
  stages.system_allocations = device_system_allocations(options.device) - allocations_before;
  result.domain = std::move(prepared.domain);  // read above through `domain`; done with it now
  return result;
}

}  // namespace covidrate::data
