#include "tools/commands.h"

namespace covidrate::tools {

int cmd_version(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_model(int argc, char** argv);
int cmd_demo(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_segment(int argc, char** argv);
int cmd_weights(int argc, char** argv);
int cmd_lungs(int argc, char** argv);
int cmd_pseudo_label(int argc, char** argv);
int cmd_curves(int argc, char** argv);

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"version", "print the version and whether the CUDA backend is built and a GPU present", cmd_version},
      {"info", "describe a DICOM series, NIfTI file or PNG/JPG: size, spacing, orientation, values", cmd_info},
      {"model", "the COVID-Rate network: parameters, forward GFLOP per slice, per-stage table", cmd_model},
      {"demo", "train a tiny network on synthetic blobs, save and reload it (engine demo)", cmd_demo},
      {"lungs", "extract the right and left lungs of a CT or picture: labels, contour picture, volumes", cmd_lungs},
      {"synth", "paste training lesions into healthy lungs: synthetic image/mask pairs (augmentation)", cmd_synth},
      {"train", "train COVID-Rate on image/mask folders: early stopping, checkpoints, resume, k-fold", cmd_train},
      {"curves", "draw a training log's loss and validation Dice per epoch as an SVG picture", cmd_curves},
      {"pseudo-label", "score predictions on unlabelled slices by certainty index; keep the surest as pairs",
       cmd_pseudo_label},
      {"eval", "score trained weights on images + masks: Dice, sensitivity, specificity, MAE, groups A/B", cmd_eval},
      {"segment", "a chest CT to lesion masks, opacity per lung, infected slices and an HTML report", cmd_segment},
      {"weights", "a .safetensors weights file: info, or convert to f16/bf16/f32 (shipped as f16)", cmd_weights},
  };
  return table;
}

}  // namespace covidrate::tools
