#include "esft/optim.h"

#include <cmath>

#include "esft/error.h"

namespace esft {

AdamW::AdamW(std::vector<TrainableTensor> params, AdamWOptions opt) : params_(std::move(params)), opt_(opt) {
  for (auto& p : params_) {
    exp_avg_.push_back(at::zeros_like(p.tensor, p.tensor.options().dtype(at::kFloat)));
    exp_avg_sq_.push_back(at::zeros_like(p.tensor, p.tensor.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard ng;
  ++step_;
  const double bc1 = 1 - std::pow(opt_.beta1, double(step_)), bc2 = 1 - std::pow(opt_.beta2, double(step_));
  const double step_size = lr / bc1, bc2_sqrt = std::sqrt(bc2);
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].tensor;
    auto g = p.grad();
    if (!g.defined()) continue;
    // Same operation sequence as torch.optim.AdamW's single-tensor path.
    if (params_[i].decay && opt_.weight_decay != 0) p.mul_(1 - lr * opt_.weight_decay);
    exp_avg_[i].lerp_(g, 1 - opt_.beta1);
    exp_avg_sq_[i].mul_(opt_.beta2).addcmul_(g, g, 1 - opt_.beta2);
    auto denom = (exp_avg_sq_[i].sqrt() / bc2_sqrt).add_(opt_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_)
    if (p.tensor.grad().defined()) p.tensor.mutable_grad() = at::Tensor();
}

std::map<std::string, at::Tensor> AdamW::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out["exp_avg." + params_[i].name] = exp_avg_[i];
    out["exp_avg_sq." + params_[i].name] = exp_avg_sq_[i];
  }
  out["step"] = at::tensor({step_}, at::kLong);
  return out;
}

void AdamW::load_state_dict(const std::map<std::string, at::Tensor>& state) {
  at::NoGradGuard ng;
  auto get = [&](const std::string& k) -> const at::Tensor& {
    auto it = state.find(k);
    if (it == state.end()) fail("optimizer state has no {} (was the run resumed with another expert config?)", k);
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& m = get("exp_avg." + params_[i].name);
    ESFT_CHECK(m.sizes() == exp_avg_[i].sizes(), "optimizer state for {} has the wrong shape", params_[i].name);
    exp_avg_[i].copy_(m);
    exp_avg_sq_[i].copy_(get("exp_avg_sq." + params_[i].name));
  }
  step_ = get("step").item<int64_t>();
}

double clip_grad_norm(const std::vector<TrainableTensor>& params, double max_norm) {
  at::NoGradGuard ng;
  std::vector<at::Tensor> norms;
  for (auto& p : params)
    if (p.tensor.grad().defined()) norms.push_back(at::linalg_vector_norm(p.tensor.grad(), 2));
  if (norms.empty()) return 0;
  auto total = at::linalg_vector_norm(at::stack(norms), 2);
  if (max_norm > 0) {
    auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
    for (auto& p : params)
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(coef);
  }
  return total.item<double>();
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return peak * double(step) / double(std::max<int64_t>(1, warmup_steps));
  if (kind == "constant") return peak;
  double progress = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  if (kind == "linear") return min_lr + (peak - min_lr) * std::max(0.0, 1.0 - progress);
  if (kind == "cosine") {
    double f = 0.5 * (1.0 + std::cos(M_PI * progress));
    double min_rate = peak > 0 ? min_lr / peak : 0;
    return peak * (f * (1 - min_rate) + min_rate);
  }
  fail("--lr-scheduler must be constant, cosine or linear, not \"{}\"", kind);
}

}  // namespace esft
