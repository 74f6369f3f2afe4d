// Trained weights on disk -> a network ready for inference. Shared by every
// command that runs a trained network (eval, segment, pseudo-label), so that the
// architecture is always resolved the same way: explicit options first, then
// what `covidrate train` recorded in the file's metadata, then the paper's.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "model/segmentation_net.h"
#include "nn/device.h"

namespace covidrate {

// What the user asked for on the command line; unset = from the file.
struct ArchitectureOverrides {
  std::optional<Architecture> architecture;  // unset: metadata 'architecture', else COVID-Rate
  std::optional<double> width;  // unset: metadata 'width', else 1
  std::optional<int64_t> size;  // unset: metadata 'size', else 512
  bool no_cpb = false;          // false: metadata 'cpb', else with CPB
  bool no_se = false;           // false: metadata 'se', else with SE
};

struct ModelSpec {
  NetConfig config;
  int64_t size = 512;  // network input side, a multiple of 16
};

// Resolves the architecture for `weights_path` from its metadata and the
// overrides. Throws covidrate::Error for unreadable metadata values (an unknown
// architecture among them) or a size that is not a multiple of 16.
ModelSpec resolve_model_spec(const std::string& weights_path, const std::map<std::string, std::string>& metadata,
                             const ArchitectureOverrides& overrides);

// Weights trained on slices zeroed outside the lungs (`train --lungs`, metadata
// "lungs": "1") see nothing else; a command that feeds whole slices (segment,
// pseudo-label) would get answers from inputs they never saw. Throws
// covidrate::Error naming the file and `command`.
void check_whole_slice_weights(const std::string& weights_path, const std::map<std::string, std::string>& metadata,
                               const std::string& command);

// Builds the network of `spec`, loads the weights (a shape mismatch names every
// differing tensor), moves it to `device`, puts it in evaluation mode and
// prepares its inference form computing in `compute` (F32 or BF16: BN folded
// once, weights cast; SegmentationNet::prepare_inference).
std::unique_ptr<SegmentationNet> load_for_inference(const std::string& weights_path, const ModelSpec& spec,
                                                 Device device, DType compute = DType::F32);

}  // namespace covidrate
