// AdamW, gradient clipping and LR schedules replayed against torch.optim.AdamW and HF schedulers.
#include <gtest/gtest.h>

#include "esft/optim.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {
// optim_reference.py's output, generated once for the tests below (python start-up is slow).
std::map<std::string, at::Tensor>& reference() {
  static std::map<std::string, at::Tensor> ref = [] {
    auto dir = test::temp_dir("optim");
    test::run_python("optim_reference.py", (dir / "ref.safetensors").string());
    return load_safetensors(dir / "ref.safetensors");
  }();
  return ref;
}
}  // namespace

TEST(Optim, AdamWClipAndCosineMatchTorch) {
  auto& ref = reference();
  std::vector<TrainableTensor> params;
  for (int i = 0; i < 3; ++i) params.push_back({"p" + std::to_string(i), ref["init." + std::to_string(i)].clone().set_requires_grad(true), i != 1});
  AdamW opt(params, AdamWOptions{0.9, 0.95, 1e-8, 0.1});
  LrSchedule sched{"cosine", 1e-2, 1e-3, 2, 6};
  for (int step = 0; step < 6; ++step) {
    for (int i = 0; i < 3; ++i) params[i].tensor.mutable_grad() = ref["grad." + std::to_string(step) + "." + std::to_string(i)].clone();
    double norm = clip_grad_norm(params, 1.0);
    EXPECT_NEAR(norm, ref["norms"][step].item<double>(), 1e-5 * norm) << "step " << step;
    EXPECT_NEAR(sched.at(step), ref["lrs"][step].item<double>(), 1e-12) << "step " << step;
    opt.step(sched.at(step));
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_LT((params[i].tensor - ref["final." + std::to_string(i)]).abs().max().item<double>(), 1e-6) << "param " << i;
}

TEST(Optim, SchedulesMatchTransformers) {
  auto& ref = reference();
  std::map<std::string, LrSchedule> ours = {{"constant", {"constant", 1e-3, 0, 3, 20}},
                                            {"linear", {"linear", 1e-3, 0, 3, 20}},
                                            {"cosine", {"cosine", 1e-3, 2e-4, 3, 20}}};
  for (auto& [name, s] : ours)
    for (int step = 0; step < 20; ++step)
      EXPECT_NEAR(s.at(step), ref["schedule." + name][step].item<double>(), 1e-15) << name << " step " << step;
}

TEST(Optim, StateRoundTripContinuesIdentically) {
  auto make = [] {
    std::vector<TrainableTensor> p = {{"w", at::arange(6, at::kFloat).reshape({2, 3}).set_requires_grad(true), true}};
    return p;
  };
  auto grad = [](int s) { return at::full({2, 3}, 0.1 * (s + 1)); };
  auto a = make();
  AdamW oa(a, {});
  for (int s = 0; s < 4; ++s) a[0].tensor.mutable_grad() = grad(s), oa.step(1e-2);
  auto b = make();
  AdamW ob(b, {});
  for (int s = 0; s < 2; ++s) b[0].tensor.mutable_grad() = grad(s), ob.step(1e-2);
  auto c = make();
  {
    at::NoGradGuard ng;
    c[0].tensor.copy_(b[0].tensor);
  }
  AdamW oc(c, {});
  oc.load_state_dict(ob.state_dict());
  for (int s = 2; s < 4; ++s) c[0].tensor.mutable_grad() = grad(s), oc.step(1e-2);
  EXPECT_TRUE(at::equal(a[0].tensor, c[0].tensor));
  EXPECT_EQ(oc.steps(), 4);
}

TEST(Optim, ScheduleEndpointsWithMinLr) {
  // HF has no linear schedule with a floor: ours decays linearly from the peak to --min-lr.
  LrSchedule lin{"linear", 1e-3, 1e-4, 4, 14}, cos{"cosine", 1e-3, 1e-4, 4, 14}, con{"constant", 1e-3, 1e-4, 4, 14};
  for (auto* s : {&lin, &cos, &con}) {
    EXPECT_EQ(s->at(0), 0.0) << s->kind << ": warmup starts from 0";
    EXPECT_DOUBLE_EQ(s->at(2), 0.5e-3) << s->kind;
    EXPECT_DOUBLE_EQ(s->at(4), 1e-3) << s->kind << ": peak right after warmup";
  }
  EXPECT_DOUBLE_EQ(lin.at(9), 0.5 * (1e-3 + 1e-4));
  EXPECT_DOUBLE_EQ(cos.at(9), 0.5 * (1e-3 + 1e-4));
  EXPECT_DOUBLE_EQ(lin.at(14), 1e-4);
  EXPECT_DOUBLE_EQ(cos.at(14), 1e-4);
  EXPECT_DOUBLE_EQ(con.at(13), 1e-3);
  for (int s = 5; s < 14; ++s) EXPECT_LT(lin.at(s), lin.at(s - 1)) << "linear decays monotonically, step " << s;
}

TEST(Optim, ClipDisabledReturnsNormAndKeepsGradients) {
  std::vector<TrainableTensor> p = {{"a", at::zeros({2}).set_requires_grad(true), true},
                                    {"b", at::zeros({1}).set_requires_grad(true), false}};
  p[0].tensor.mutable_grad() = at::tensor({3.0f, 0.0f});
  p[1].tensor.mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm(p, 0), 5.0, 1e-6);
  EXPECT_EQ(p[1].tensor.grad().item<float>(), 4.0f);
  EXPECT_NEAR(clip_grad_norm(p, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(p[1].tensor.grad().item<float>(), 4.0f / (5.0f + 1e-6f), 1e-6);
  EXPECT_NEAR(clip_grad_norm(p, 10.0), 1.0, 1e-5) << "already below the limit: unchanged";
  EXPECT_NEAR(p[0].tensor.grad()[0].item<float>(), 3.0f / 5.0f, 1e-5);
}
