// AdamW, gradient clipping and LR schedules replayed against torch.optim.AdamW and HF schedulers.
#include <gtest/gtest.h>

#include "esft/optim.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

TEST(Optim, AdamWClipAndCosineMatchTorch) {
  auto dir = test::temp_dir("optim");
  test::run_python("optim_reference.py", (dir / "ref.safetensors").string());
  auto ref = load_safetensors(dir / "ref.safetensors");
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
  auto dir = test::temp_dir("sched");
  test::run_python("optim_reference.py", (dir / "ref.safetensors").string());
  auto ref = load_safetensors(dir / "ref.safetensors");
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
