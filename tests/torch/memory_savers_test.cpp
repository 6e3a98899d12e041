// The memory savers of training must not change what is computed: activation checkpointing
// (layers re-run in the backward) and the chunked LM-head cross-entropy give the losses and
// gradients of the plain forward, in fp32 on the CPU, with routing hooks firing once.
#include <gtest/gtest.h>

#include "esft/model.h"
#include "esft/nn/lm_loss.h"
#include "esft/nn/ops.h"
#include "test_util.h"

using namespace esft;

namespace {

struct CountingObserver : RoutingObserver {
  std::map<int, int> calls;
  void on_routing(int layer, const at::Tensor&, const at::Tensor&) override { ++calls[layer]; }
};

double rel(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-12);
}

TEST(MemorySavers, ChunkedLmLossEqualsFullLogits) {
  at::manual_seed(3);
  auto h = at::randn({2, 13, 16}), w = at::randn({40, 16}).requires_grad_(true);
  auto labels = at::randint(0, 40, {2, 13}, at::kLong);
  labels.index_put_({0, at::indexing::Slice(0, 4)}, -100);
  auto h1 = h.clone().requires_grad_(true), h2 = h.clone().requires_grad_(true);
  int64_t n1 = 0, n2 = 0;
  auto full = nn::causal_lm_loss_sum(at::linear(h1, w), labels, &n1);
  full.backward();
  auto gw_full = w.grad().clone();
  w.mutable_grad().zero_();
  for (int64_t chunk : {1, 5, 64}) {
    auto h3 = h.clone().requires_grad_(true);
    auto chunked = nn::lm_loss_sum(h3.reshape({-1, 16}), w, nn::shift_labels(labels), &n2, chunk);
    EXPECT_EQ(n1, n2);
    EXPECT_NEAR(chunked.item<double>(), full.item<double>(), 1e-4) << chunk;
    chunked.backward();
    EXPECT_LT(rel(h3.grad(), h1.grad()), 1e-5) << chunk;
    EXPECT_LT(rel(w.grad(), gw_full), 1e-5) << chunk;
    w.mutable_grad().zero_();
  }
  (void)h2;
}

// Per family (router aux loss on where the family has one, every weight class trained);
// "family:mxfp4" loads MXFP4 experts (packed frozen bank, expanded again in the re-run).
class Checkpointing : public ::testing::TestWithParam<std::string> {};

TEST_P(Checkpointing, EqualsPlainBackward) {
  const std::string family = GetParam().substr(0, GetParam().find(':'));
  const bool mxfp4 = GetParam().find(":mxfp4") != std::string::npos;
  auto dir = test::temp_dir("ckpt-" + family + (mxfp4 ? "-mxfp4" : ""));
  test::run_python("tiny_models.py", "--family " + family + " --config base --out " + dir.string() + (mxfp4 ? " --mxfp4" : ""));
  at::manual_seed(11);  // a fixed batch: routing near-ties, rare but possible, would differ per run
  auto ids = at::randint(3, 128, {2, 12}, at::kLong), labels = ids.clone();
  labels.index_put_({0, at::indexing::Slice(0, 3)}, -100);
  auto pos = at::tensor({0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}, at::kLong).repeat({2, 1});
  auto doc = at::tensor({0, 0, 0, 0, 0, 0, 1, 1, 1, 1, -1, -1}, at::kLong).repeat({2, 1});
  // Plain, every layer checkpointed, and the first layer only (the rest plain).
  const int64_t variants[] = {0, -1, 1};
  std::map<std::string, at::Tensor> grads[3];
  double loss[3];
  for (int v = 0; v < 3; ++v) {
    auto model = load_model(dir, LoadOptions{"cpu", at::kFloat});
    auto moe = model->moe_layers();
    ExpertSelection sel;
    sel.experts[moe.front()] = {0, 3};
    sel.experts[moe.back()] = {1};
    sel.shared_experts = sel.non_expert_modules = true;
    model->configure_training(sel);
    CountingObserver obs;
    ForwardOptions opt{false, &obs, model->has_router_aux_loss(), variants[v]};
    auto out = model->forward(Batch{ids, labels, pos, doc}, opt);
    auto l = out.loss_sum / double(out.n_loss_tokens);
    l.backward();
    loss[v] = l.item<double>();
    for (int layer : moe) EXPECT_EQ(obs.calls[layer], 1) << "routing hook of layer " << layer << " fired again";
    for (auto& t : model->trainable_tensors()) {
      ASSERT_TRUE(t.tensor.grad().defined()) << t.name << " (checkpoint_layers " << variants[v] << ")";
      grads[v][t.name] = t.tensor.grad();
    }
  }
  for (int v = 1; v < 3; ++v) {
    EXPECT_NEAR(loss[v], loss[0], 1e-6) << "checkpoint_layers " << variants[v];
    ASSERT_EQ(grads[0].size(), grads[v].size());
    for (auto& [name, g] : grads[0]) EXPECT_LT(rel(grads[v].at(name), g), 1e-5) << name << ", checkpoint_layers " << variants[v];
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Checkpointing,
                         ::testing::Values("qwen3_moe", "qwen2_moe", "olmoe", "gpt_oss", "gpt_oss:mxfp4"));

}  // namespace
