// A picture of a network's architecture, drawn from its model summary
// (SegmentationNet::summary: each stage's output shape, parameters, cost,
// operation and the stages it reads), as an SVG document. Rows are the order
// of computation (a stage sits one row below the last of its inputs), columns
// the resolution (the full-size slice on the left, each column to the right
// half the size), so an encoder-decoder reads as a ">" : down the encoder to
// the right, back up the decoder to the left, skip connections straight down
// a column. `covidrate model --svg FILE` writes it; docs/model.md shows those
// of COVID-Rate and the baselines.
#pragma once
#include <cstdint>
#include <string>

#include "model/segmentation_net.h"

namespace covidrate {

// For `size` x `size` slices (a multiple of 16). Every stage is one box
// (class 'stage', plus one for the image), every input one edge (class
// 'edge'; dashed: a skip connection, the inputs after the first).
std::string architecture_svg(const SegmentationNet& net, int64_t size);

// architecture_svg written to `path` atomically (nn/text_file.h).
void save_architecture_svg(const std::string& path, const SegmentationNet& net, int64_t size);

}  // namespace covidrate
