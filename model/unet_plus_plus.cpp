#include "model/unet_plus_plus.h"

#include <cstdio>
#include <string>
#include <vector>

namespace covidrate {

namespace {
// Zhou et al.'s filters per depth (width 1).
constexpr int kLevelChannels[] = {32, 64, 128, 256, 512};

std::string node_name(int i, int j) {
  char name[16];  // "x<i>_<j>" (a chain of std::string + draws a false -Wrestrict from GCC 12)
  std::snprintf(name, sizeof(name), "x%d_%d", i, j);
  return name;
}
}  // namespace

UNetPlusPlus::UNetPlusPlus(const NetConfig& config)
    : SegmentationNet("UNetPlusPlus", config), nodes_((kDepth + 1) * (kDepth + 1)) {
  CR_CHECK(config.architecture == Architecture::UNetPlusPlus,
           "UNetPlusPlus: the configuration names " << to_string(config.architecture) << " (use make_network)");
  CR_CHECK(config.cpb && config.se, "UNetPlusPlus: CPB and SE are COVID-Rate's; unet++ has neither to switch off");
  for (const int c : kLevelChannels) channels_.push_back(scaled_channels(c, config.width));
  // Column by column, the order forward computes them in: every node's inputs
  // exist before it.
  for (int j = 0; j <= kDepth; ++j) {
    for (int i = 0; i + j <= kDepth; ++i) {
      const int out = channels_[i];
      const int in = j == 0 ? (i == 0 ? 1 : channels_[i - 1]) : j * out + channels_[i + 1];
      const std::string name = node_name(i, j);
      const model::BlockSite site{store(), costs(), name, 1 << i};
      nodes_[index(i, j)].emplace(Node{model::ConvBnRelu(site, "conv1", "bn1", in, out, 3),
                                       model::ConvBnRelu(site, "conv2", "bn2", out, out, 3)});
      // Main path: the node above-left (j = 0: the image or the node above,
      // max-pooled), or the node below-left upsampled; skips: row i's earlier nodes.
      std::vector<std::string> inputs;
      if (j == 0) inputs.push_back(i == 0 ? std::string(kImageInput) : node_name(i - 1, 0));
      else inputs.push_back(node_name(i + 1, j - 1));
      for (int k = 0; k < j; ++k) inputs.push_back(node_name(i, k));
      const char* operation = j > 0   ? "upsample, concat, 2 x 3x3"
                              : i > 0 ? "max pool, 2 x (3x3, BN, ReLU)"
                                      : "2 x (3x3 conv, BN, ReLU)";
      add_stage(name, out, 1 << i, std::move(inputs), operation);
    }
  }
  add_head(channels_[0]);
  store().allocate(Device::CPU);
}

void UNetPlusPlus::set_blocks_training(bool training) {
  for (auto& n : nodes_)
    if (n) n->first.set_training(training), n->second.set_training(training);
}

void UNetPlusPlus::prepare_blocks(DType compute, bool /*upsample_phases: no conv follows an upsampling alone*/) {
  for (auto& n : nodes_)
    if (n) n->first.prepare_inference(compute), n->second.prepare_inference(compute);
}

ag::Var UNetPlusPlus::features(const ag::Var& image) const {
  std::vector<ag::Var> x(nodes_.size());
  // in by value: let go (when nothing else holds it) before the second conv.
  const auto node = [&](int i, int j, ag::Var in) {
    const Node& n = *nodes_[index(i, j)];
    const ag::Var h = n.first.forward(in);
    in = ag::Var();
    x[index(i, j)] = n.second.forward(h);
  };
  node(0, 0, image);
  for (int i = 1; i <= kDepth; ++i) node(i, 0, ag::maxpool2x2(x[index(i - 1, 0)]));
  for (int j = 1; j <= kDepth; ++j) {
    for (int i = 0; i + j <= kDepth; ++i) {
      std::vector<ag::Var> parts;
      for (int k = 0; k < j; ++k) parts.push_back(x[index(i, k)]);
      parts.push_back(ag::upsample2x(x[index(i + 1, j - 1)]));
      ag::Var joined = ag::concat(parts);
      parts.clear();
      // Node (i, j) is row i's last (i + j == kDepth): nothing reads row i's
      // earlier maps after it, nor row i + 1's last, which it upsampled. (The
      // tape, when there is one, keeps what the backward needs.)
      if (i + j == kDepth) {
        for (int k = 0; k < j; ++k) x[index(i, k)] = ag::Var();
        x[index(i + 1, j - 1)] = ag::Var();
      }
      node(i, j, std::move(joined));
    }
  }
  return x[index(0, kDepth)];
}

}  // namespace covidrate
