#include "esft/dist/parallel.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <tuple>

#include "esft/error.h"
#include "esft/log.h"
#include "esft/nn/decoder.h"
#include "esft/optim.h"

namespace esft::dist {

namespace {

std::unique_ptr<ParallelContext> g_ctx;
int g_generation = 0;  // sub-groups are rebuilt when a later subcommand asks for another E

at::Tensor host_to(const std::vector<double>& v, const at::Device& d) { return at::tensor(v, at::kDouble).to(d); }

// Sums the gradients of `params` (all defined, same shapes on every member) over g, in buckets.
void all_reduce_grads(const Group& g, const std::vector<at::Tensor>& params) {
  if (g.size() == 1 || params.empty()) return;
  const int64_t cap = int64_t(1) << 26;  // elements per bucket (256 MB of fp32)
  for (size_t i = 0; i < params.size();) {
    size_t j = i;
    int64_t n = 0;
    while (j < params.size() && (j == i || n + params[j].numel() <= cap)) n += params[j++].numel();
    std::vector<at::Tensor> flat;
    for (size_t k = i; k < j; ++k) flat.push_back(params[k].grad().reshape({-1}));
    auto buf = at::cat(flat);
    g.all_reduce_sum(buf);
    int64_t off = 0;
    for (size_t k = i; k < j; ++k) {
      auto& gr = const_cast<at::Tensor&>(params[k]).mutable_grad();
      gr.copy_(buf.narrow(0, off, gr.numel()).view_as(gr));
      off += gr.numel();
    }
    i = j;
  }
}

std::string expert_key(const std::string& name, int64_t e) { return fmt::format("{}.expert_{}", name, e); }

}  // namespace

ExpertPlacement place_experts(int64_t n_experts, const std::vector<int>& trainable, int ep_size, int rank) {
  ExpertPlacement p;
  p.n_ranks = ep_size;
  p.rank = rank;
  if (ep_size == 1) return p;
  ESFT_CHECK(n_experts % ep_size == 0, "--expert-parallel {} must divide the {} routed experts of each MoE layer", ep_size,
             n_experts);
  const int64_t cap = n_experts / ep_size;
  p.owner.assign(n_experts, -1);
  std::vector<int64_t> held(ep_size, 0);
  for (size_t i = 0; i < trainable.size(); ++i) {
    const int r = int(i % ep_size);
    p.owner[trainable[i]] = r;
    ++held[r];
  }
  int r = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    if (p.owner[e] >= 0) continue;
    while (held[r] >= cap) ++r;
    p.owner[e] = r;
    ++held[r];
  }
  return p;
}

ParallelContext* ParallelContext::get() { return g_ctx.get(); }

ParallelContext& ParallelContext::init(int expert_parallel, const std::string& device) {
  if (!g_ctx) {
    g_ctx.reset(new ParallelContext());
    auto& c = *g_ctx;
    c.world_info_ = world_from_env(process_env());
    const auto& w = c.world_info_;
    c.device_ = device;
    if (w.launched() && device.rfind("cuda", 0) == 0) {
      // One GPU per local rank.
      if (device != "cuda" && device != fmt::format("cuda:{}", w.local_rank))
        log_warn(fmt::format("--device {} ignored: rank {} uses cuda:{} (one GPU per local rank)", device, w.rank,
                             w.local_rank));
      c.device_ = fmt::format("cuda:{}", w.local_rank);
    }
    if (w.launched()) {
      set_log_rank(w.rank);
      c.comm_ = std::make_unique<Comm>(w, at::Device(c.device_));
      c.world_ = c.comm_->world();
    }
  }
  auto& c = *g_ctx;
  const int W = c.world_.size();
  ESFT_CHECK(expert_parallel >= 1 && W % expert_parallel == 0,
             "--expert-parallel {} must divide the world size {} (data parallel = world size / expert parallel)",
             expert_parallel, W);
  if (c.ep_.size() != expert_parallel || (expert_parallel == 1 && c.edp_.size() != W)) {
    const int E = expert_parallel, r = c.rank(), gen = g_generation++;
    std::vector<int> ep_members, edp_members;
    for (int i = 0; i < E; ++i) ep_members.push_back((r / E) * E + i);
    for (int i = r % E; i < W; i += E) edp_members.push_back(i);
    c.ep_ = E == 1 ? Group() : c.comm_->subgroup(fmt::format("ep{}.{}", gen, r / E), ep_members);
    if (E == 1) c.ep_ = Group();
    c.edp_ = int(edp_members.size()) == W ? c.world_ : c.comm_->subgroup(fmt::format("edp{}.{}", gen, r % E), edp_members);
  }
  return c;
}

std::string ParallelContext::describe() const {
  if (!launched()) return "single process";
  return fmt::format("{} rank(s) via {} on {}: expert parallel {} x expert-data parallel {}; data sharded over all {} "
                     "ranks",
                     world_size(), world_info_.launcher, device_, ep_size(), edp_size(), world_size());
}

std::function<ExpertPlacement(int64_t, int64_t)> ParallelContext::placement(const ExpertSelection* sel) const {
  if (ep_size() == 1) return {};
  std::map<int64_t, std::vector<int>> trainable;
  if (sel)
    for (auto& [l, ids] : sel->experts) trainable[l] = ids;
  const int ep = ep_size(), rank = ep_rank();
  return [trainable, ep, rank](int64_t layer, int64_t n) {
    auto it = trainable.find(layer);
    return place_experts(n, it == trainable.end() ? std::vector<int>{} : it->second, ep, rank);
  };
}

void ParallelContext::attach(MoeModel& model, const ExpertSelection* sel) {
  auto* dec = dynamic_cast<nn::DecoderModel*>(&model);
  moe_layers_.clear();
  bank_layer_.clear();
  int64_t first_trained = INT64_MAX;
  if (sel)
    for (auto& [l, ids] : sel->experts)
      if (!ids.empty()) first_trained = std::min<int64_t>(first_trained, l);
  for (int l : model.moe_layers()) {
    moe_layers_.push_back(l);
    auto* block = dec ? dec->moe_block(l) : nullptr;
    if (block) bank_layer_.push_back({block->prefix() + "experts.", l});
    if (ep_size() == 1) continue;
    ESFT_CHECK(block, "expert parallelism needs a model built on the MoE core ({} is not)", model.architecture());
    block->set_dispatcher(std::make_shared<AllToAllDispatcher>(ep_, &block->banks(), l >= first_trained, timer_));
  }
}

std::vector<int64_t> ParallelContext::my_share(int64_t n) const {
  std::vector<int64_t> out;
  for (int64_t m = rank(); m < n; m += world_size()) out.push_back(m);
  return out;
}

int64_t ParallelContext::rounds(int64_t n) const { return (n + world_size() - 1) / world_size(); }

std::vector<double> ParallelContext::sum(std::vector<double> v) const {
  if (world_size() == 1 || v.empty()) return v;
  auto t = host_to(v, world_.device());
  world_.all_reduce_sum(t);
  auto h = t.to(at::kCPU);
  return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
}

double ParallelContext::max(double value) const {
  if (world_size() == 1) return value;
  auto t = host_to({value}, world_.device());
  world_.all_reduce_max(t);
  return t.item<double>();
}

void ParallelContext::reduce_gradients(const std::vector<TrainableTensor>& params) const {
  if (world_size() == 1) return;
  at::NoGradGuard ng;
  // Whether each tensor has a gradient anywhere: replicated tensors by position, expert banks by
  // MoE layer (a rank may hold none of a layer's trained experts, or hold ones no token reached).
  std::vector<int64_t> slot(params.size());
  int64_t n_dense = 0;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].expert_ids.empty()) slot[i] = n_dense++;
  std::vector<double> flags(n_dense + moe_layers_.size(), 0.0);
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].expert_ids.empty()) {
      int64_t li = -1;
      for (auto& [prefix, layer] : bank_layer_)
        if (params[i].name.compare(0, prefix.size(), prefix) == 0)
          li = std::find(moe_layers_.begin(), moe_layers_.end(), layer) - moe_layers_.begin();
      ESFT_CHECK(li >= 0, "{}: expert tensor of no known MoE layer", params[i].name);
      slot[i] = n_dense + li;
    }
    if (params[i].tensor.grad().defined()) flags[slot[i]] = 1;
  }
  flags = sum(flags);
  std::vector<at::Tensor> dense, experts;
  for (size_t i = 0; i < params.size(); ++i) {
    auto& t = const_cast<at::Tensor&>(params[i].tensor);
    if (flags[slot[i]] == 0) continue;  // no gradient anywhere: stays without one, as on one process
    if (!t.grad().defined()) t.mutable_grad() = at::zeros_like(t);
    (params[i].expert_ids.empty() ? dense : experts).push_back(t);
  }
  all_reduce_grads(world_, dense);
  all_reduce_grads(edp_, experts);
}

double ParallelContext::clip_grad_norm(const std::vector<TrainableTensor>& params, double max_norm) const {
  // Without expert parallelism every rank holds every trained tensor, fully reduced: the
  // single-process function applies as it is.
  if (ep_size() == 1) return esft::clip_grad_norm(params, max_norm);
  at::NoGradGuard ng;
  // Replicated tensors count once (they are equal on every rank); each expert lives on one rank
  // of the EP group, so the experts' squares are summed over that group.
  auto sq = at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(world_.device()));
  for (auto& p : params)
    if (p.tensor.grad().defined())
      sq[p.expert_ids.empty() ? 0 : 1] += at::linalg_vector_norm(p.tensor.grad(), 2).to(at::kDouble).pow(2);
  auto expert_sq = sq.narrow(0, 1, 1).clone();
  ep_.all_reduce_sum(expert_sq);
  auto total = (sq[0] + expert_sq[0]).sqrt();
  if (max_norm > 0) {
    auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0).to(at::kFloat);
    for (auto& p : params)
      if (p.tensor.grad().defined()) const_cast<at::Tensor&>(p.tensor).mutable_grad().mul_(coef);
  }
  return total.item<double>();
}

double ParallelContext::take_comm_seconds() {
  double s = timer_->seconds;
  timer_->seconds = 0;
  return s;
}

// ---- gathering to rank 0 ----------------------------------------------------------------------

std::vector<HfTensor> ParallelContext::gather_named(const Group& g, std::vector<HfTensor> mine) const {
  if (g.size() == 1) return mine;
  const auto dev = g.device();
  auto byte_opts = at::TensorOptions().dtype(at::kByte).device(dev);
  if (g.rank() != 0) {
    nlohmann::json header = nlohmann::json::array();
    std::vector<at::Tensor> parts;
    for (auto& t : mine) {
      auto c = t.tensor.detach().contiguous();
      header.push_back({{"name", t.name}, {"dtype", int(c.scalar_type())}, {"shape", c.sizes().vec()}});
      parts.push_back(c.to(dev).reshape({-1}).view(at::kByte));
    }
    auto h = header.dump();
    auto htensor = at::from_blob(h.data(), {int64_t(h.size())}, at::kByte).to(dev).clone();
    auto blob = parts.empty() ? at::empty({0}, byte_opts) : at::cat(parts);
    auto lens = at::tensor({int64_t(h.size()), blob.numel()}, at::kLong).to(dev);
    g.send(lens, 0, 1);
    g.send(htensor, 0, 2);
    if (blob.numel()) g.send(blob, 0, 3);
    return {};
  }
  for (int src = 1; src < g.size(); ++src) {
    auto lens = at::empty({2}, at::TensorOptions().dtype(at::kLong).device(dev));
    g.recv(lens, src, 1);
    auto lh = lens.to(at::kCPU);
    const int64_t hl = lh[0].item<int64_t>(), bl = lh[1].item<int64_t>();
    auto htensor = at::empty({hl}, byte_opts);
    g.recv(htensor, src, 2);
    auto blob = at::empty({bl}, byte_opts);
    if (bl) g.recv(blob, src, 3);
    auto hc = htensor.to(at::kCPU);
    auto header = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(hc.data_ptr<uint8_t>()), hl));
    auto blob_cpu = blob.to(at::kCPU);
    int64_t off = 0;
    for (auto& e : header) {
      auto dtype = at::ScalarType(e["dtype"].get<int>());
      auto shape = e["shape"].get<std::vector<int64_t>>();
      int64_t n = 1;
      for (auto s : shape) n *= s;
      const int64_t nb = n * int64_t(c10::elementSize(dtype));
      auto t = blob_cpu.narrow(0, off, nb).clone().view(dtype).reshape(shape);
      off += nb;
      mine.push_back({e["name"].get<std::string>(), t});
    }
  }
  return mine;
}

std::vector<HfTensor> ParallelContext::gather_adapter(MoeModel& model) const {
  auto local = model.adapter_tensors();
  if (world_size() == 1) return local;
  if (ep_size() == 1) return is_main() ? local : std::vector<HfTensor>{};
  // One copy of every expert lives in EP group 0 (ranks 0..E-1); its other replicas stay quiet.
  if (rank() >= ep_size()) return {};
  std::set<std::string> dense;
  auto* dec = dynamic_cast<nn::DecoderModel*>(&model);
  for (auto& t : model.trainable_tensors())
    if (t.expert_ids.empty()) dense.insert(t.name);
  std::vector<HfTensor> mine;
  for (auto& t : local)
    if (is_main() || !dense.count(t.name)) mine.push_back(t);
  auto all = gather_named(ep_, std::move(mine));
  if (!is_main()) return {};
  // The single-process order: replicated tensors, then layer by layer, expert by expert.
  std::vector<std::tuple<int64_t, int64_t, size_t>> key(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    key[i] = {-1, -1, i};
    if (dense.count(all[i].name) || !dec) continue;
    for (int l : moe_layers_) {
      int64_t e;
      std::string part;
      if (dec->moe_block(l)->codec().parse_adapter_name(all[i].name, &e, &part)) {
        key[i] = {l, e, i};
        break;
      }
    }
  }
  std::sort(key.begin(), key.end());
  std::vector<HfTensor> out;
  for (auto& k : key) out.push_back(all[std::get<2>(k)]);
  return out;
}

std::vector<HfTensor> ParallelContext::gather_train_state(const AdamW& optim) const {
  std::vector<HfTensor> mine;
  const bool holds_copy = rank() < ep_size();  // EP group 0: one copy of everything
  if (!holds_copy && ep_size() > 1) return {};
  if (ep_size() == 1 && !is_main()) return {};
  auto state = optim.state_dict();
  for (auto& p : optim.params()) {
    std::vector<std::pair<std::string, at::Tensor>> full = {{"param." + p.name, p.tensor.detach()},
                                                            {"optim.exp_avg." + p.name, state.at("exp_avg." + p.name)},
                                                            {"optim.exp_avg_sq." + p.name, state.at("exp_avg_sq." + p.name)}};
    for (auto& [key, t] : full) {
      if (p.expert_ids.empty()) {
        if (is_main()) mine.push_back({key, t});
        continue;
      }
      for (size_t i = 0; i < p.expert_ids.size(); ++i) mine.push_back({expert_key(key, p.expert_ids[i]), t[i]});
    }
  }
  if (is_main()) mine.push_back({"optim.step", state.at("step")});
  return gather_named(ep_, std::move(mine));
}

void ParallelContext::load_train_state(const std::map<std::string, at::Tensor>& st, AdamW& optim,
                                       const std::string& where) const {
  auto get = [&](const std::string& k, const std::string& what) -> const at::Tensor& {
    auto it = st.find(k);
    if (it == st.end()) fail("{}: checkpoint has no {} for {} (different expert config?)", where, what, k);
    return it->second;
  };
  // One tensor of this rank's layout: as saved whole, or stacked from its experts' rows.
  auto local = [&](const std::string& key, const TrainableTensor& p, const std::string& what) -> at::Tensor {
    if (p.expert_ids.empty() || st.count(key)) return get(key, what);
    std::vector<at::Tensor> rows;
    for (auto e : p.expert_ids) rows.push_back(get(expert_key(key, e), what));
    return at::stack(rows);
  };
  at::NoGradGuard ng;
  std::map<std::string, at::Tensor> optim_state;
  for (auto& p : optim.params()) {
    auto w = local("param." + p.name, p, "weights");
    ESFT_CHECK(w.sizes() == p.tensor.sizes(), "{}: {} has another shape than in this model", where, p.name);
    const_cast<at::Tensor&>(p.tensor).copy_(w);
    optim_state["exp_avg." + p.name] = local("optim.exp_avg." + p.name, p, "optimizer state");
    optim_state["exp_avg_sq." + p.name] = local("optim.exp_avg_sq." + p.name, p, "optimizer state");
  }
  optim_state["step"] = get("optim.step", "the optimizer step");
  optim.load_state_dict(optim_state);
}

std::vector<std::pair<std::string, std::string>> ParallelContext::gather_blobs(
    std::vector<std::pair<std::string, std::string>> mine) const {
  if (world_size() == 1) return mine;
  std::vector<HfTensor> t;
  for (auto& [name, bytes] : mine)
    t.push_back({name, at::from_blob(bytes.data(), {int64_t(bytes.size())}, at::kByte).clone()});
  auto all = gather_named(world_, std::move(t));
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& x : all) {
    auto c = x.tensor.to(at::kCPU).contiguous();
    out.push_back({x.name, std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel())});
  }
  return out;
}

std::string ParallelContext::broadcast_text(const std::string& text) const {
  if (world_size() == 1) return text;
  auto len = at::tensor({int64_t(is_main() ? text.size() : 0)}, at::kLong).to(world_.device());
  world_.broadcast(len, 0);
  const int64_t n = len.item<int64_t>();
  auto bytes = is_main() ? at::from_blob(const_cast<char*>(text.data()), {n}, at::kByte).to(world_.device()).clone()
                         : at::empty({n}, at::TensorOptions().dtype(at::kByte).device(world_.device()));
  if (n) world_.broadcast(bytes, 0);
  auto c = bytes.to(at::kCPU);
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), n);
}

std::string ParallelContext::report_failure(const std::string& error) {
  if (!g_ctx || !g_ctx->comm_) return "";
  return g_ctx->comm_->report_failure(error);
}

void ParallelContext::end_job(bool ok) {
  if (!g_ctx || !g_ctx->comm_) return;
  if (ok) {
    g_ctx->comm_->finish();
    g_ctx.reset();  // process groups go before the process's static objects do
    return;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace esft::dist
