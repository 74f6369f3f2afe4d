#include "nn/adam.h"

#include <cmath>
#include <sstream>

#include "nn/safetensors.h"

namespace covidrate {

Adam::Adam(ParameterStore& store, const AdamParams& params) : store_(store), params_(params) {
  CR_CHECK(store.allocated(), "Adam: allocate the ParameterStore first");
  CR_CHECK(params.lr > 0 && params.beta1 >= 0 && params.beta1 < 1 && params.beta2 >= 0 &&
               params.beta2 < 1 && params.eps > 0 && params.decay >= 0,
           "Adam: lr " << params.lr << ", beta1 " << params.beta1 << ", beta2 " << params.beta2
                       << ", eps " << params.eps << ", decay " << params.decay
                       << " (need lr > 0, betas in [0, 1), eps > 0, decay >= 0)");
  store.ensure_training_state();
}

void Adam::step() {
  for (const auto& p : store_.parameters()) {
    if (!p.trainable || p.l2 == 0.0) continue;
    Tensor grad = store_.view(store_.flat_grads(), p);
    ops::axpy(2.0 * p.l2, p.var.value(), grad);
  }
  ++step_;
  ops::adam_step(store_.flat_values(), store_.flat_grads(), store_.adam_m(), store_.adam_v(), params_,
                 step_);
}

double Adam::current_lr() const {
  const double t = static_cast<double>(step_ + 1);
  return params_.lr / (1.0 + params_.decay * (t - 1.0)) * std::sqrt(1.0 - std::pow(params_.beta2, t)) /
         (1.0 - std::pow(params_.beta1, t));
}

double Adam::l2_penalty() const {
  double sum = 0.0;
  for (const auto& p : store_.parameters()) {
    if (p.l2 == 0.0) continue;
    double squares = 0.0;
    for (double w : p.var.value().to_vector_f64()) squares += w * w;
    sum += p.l2 * squares;
  }
  return sum;
}

void Adam::save(const std::string& path) const {
  std::map<std::string, Tensor> tensors;
  for (const auto& p : store_.parameters()) {
    tensors.emplace("m." + p.name, store_.view(store_.adam_m(), p));
    tensors.emplace("v." + p.name, store_.view(store_.adam_v(), p));
  }
  std::ostringstream lr, decay;
  lr.precision(17);
  decay.precision(17);
  lr << params_.lr;
  decay << params_.decay;
  safetensors::save(path, tensors,
                    {{"step", std::to_string(step_)}, {"lr", lr.str()}, {"decay", decay.str()}});
}

void Adam::load(const std::string& path) {
  const std::map<std::string, std::string> meta = safetensors::load_metadata(path);
  auto it = meta.find("step");
  CR_CHECK(it != meta.end(), "Adam::load: '" << path << "' has no 'step' in its metadata");
  int64_t step = -1;
  try {
    size_t used = 0;
    step = std::stoll(it->second, &used);
    if (used != it->second.size()) step = -1;
  } catch (const std::exception&) {
  }
  CR_CHECK(step >= 0, "Adam::load: '" << path << "' has step '" << it->second
                                      << "', not a non-negative integer");

  const std::map<std::string, Tensor> tensors = safetensors::load(path);
  std::vector<std::string> problems;
  for (const auto& p : store_.parameters()) {
    for (const char* prefix : {"m.", "v."}) {
      auto t = tensors.find(prefix + p.name);
      if (t == tensors.end())
        problems.push_back(std::string("missing '") + prefix + p.name + "'");
      else if (t->second.shape() != p.var.value().shape() || t->second.dtype() != store_.dtype())
        problems.push_back("'" + t->first + "' is " + t->second.str() + ", expected " +
                           p.var.value().str());
    }
  }
  if (tensors.size() != 2 * store_.parameters().size() && problems.empty())
    problems.push_back(std::to_string(tensors.size()) + " tensors for " +
                       std::to_string(store_.parameters().size()) + " parameters");
  if (!problems.empty()) {
    std::ostringstream os;
    for (size_t i = 0; i < problems.size() && i < 20; ++i) os << (i ? "; " : "") << problems[i];
    CR_FAIL("Adam::load: '" << path << "' does not match the model: " << os.str());
  }
  for (const auto& p : store_.parameters()) {
    store_.view(store_.adam_m(), p).copy_from(tensors.at("m." + p.name));
    store_.view(store_.adam_v(), p).copy_from(tensors.at("v." + p.name));
  }
  step_ = step;
}

}  // namespace covidrate
