#include "esft/dist/ep_dispatch.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <chrono>

#include "esft/error.h"
#include "esft/nn/experts.h"

namespace esft::dist {

namespace {

class Stopwatch {
 public:
  explicit Stopwatch(CommTimer* t) : t_(t), start_(std::chrono::steady_clock::now()) {}
  ~Stopwatch() {
    if (t_) t_->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  CommTimer* t_;
  std::chrono::steady_clock::time_point start_;
};

// The backward of an all-to-all: the same exchange, directions swapped.
struct AllToAllBackward : torch::autograd::Node {
  Group group;
  std::vector<int64_t> send_rows, recv_rows;  // of the forward
  std::vector<int64_t> out_shape;             // of the forward's result
  at::TensorOptions options;
  CommTimer* timer = nullptr;
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    Stopwatch sw(timer);
    at::Tensor g = grads[0];
    if (!g.defined()) g = at::zeros(out_shape, options);  // an unused result still takes part in the exchange
    return {group.all_to_all(g.contiguous(), recv_rows, send_rows)};
  }
  std::string name() const override { return "esft::AllToAllBackward"; }
};

struct PlanState {
  std::vector<int64_t> send_rows, recv_rows;
  at::Tensor regroup;  // received row order (source rank, slot) -> rows grouped by local slot
};

int64_t sum(const int64_t* p, int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

at::Tensor all_to_all_rows(const Group& group, const at::Tensor& x, const std::vector<int64_t>& send_rows,
                           const std::vector<int64_t>& recv_rows, CommTimer* timer) {
  at::Tensor out;
  {
    Stopwatch sw(timer);
    out = group.all_to_all(x.detach(), send_rows, recv_rows);
    if (group.size() == 1) out = out.clone();  // a tensor of its own to hang the history on
  }
  if (at::GradMode::is_enabled() && x.requires_grad()) {
    auto node = std::shared_ptr<AllToAllBackward>(new AllToAllBackward(), torch::autograd::deleteNode);
    node->group = group;
    node->send_rows = send_rows;
    node->recv_rows = recv_rows;
    node->timer = timer;
    node->out_shape = out.sizes().vec();
    node->options = out.options();
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(out, node);
  }
  return out;
}

AllToAllDispatcher::AllToAllDispatcher(Group group, const nn::ExpertBanks* banks, bool force_backward,
                                       std::shared_ptr<CommTimer> timer)
    : group_(std::move(group)), banks_(banks), force_backward_(force_backward), timer_(std::move(timer)) {
  ESFT_CHECK(int(banks_->slots_per_rank().size()) == group_.size(),
             "expert-parallel dispatcher: the experts are placed over {} ranks, the group has {}",
             banks_->slots_per_rank().size(), group_.size());
}

at::Tensor AllToAllDispatcher::dispatch(const at::Tensor& x, const at::Tensor& slot, int64_t n_slots, bool need_host_counts,
                                        nn::DispatchPlan* plan) {
  const int64_t P = group_.size(), me = group_.rank();
  const auto& spr = banks_->slots_per_rank();
  const int64_t n_me = spr[me];
  // Copies sorted by global slot = grouped by destination rank, then by that rank's slot.
  nn::sort_copies_by_slot(slot, x.size(0), n_slots, /*need_host_counts=*/false, plan);
  auto counts = plan->counts_E;

  auto st = std::make_shared<PlanState>();
  at::Tensor recv_counts;
  {
    Stopwatch sw(timer_.get());
    recv_counts = group_.all_to_all(counts, spr, std::vector<int64_t>(P, n_me));  // [P * n_me], source-rank major
  }
  auto counts_host = counts.to(at::kCPU), recv_host = recv_counts.to(at::kCPU);
  const int64_t* c = counts_host.data_ptr<int64_t>();
  const int64_t* rc = recv_host.data_ptr<int64_t>();
  st->send_rows.resize(P);
  st->recv_rows.resize(P);
  for (int64_t q = 0, first = 0; q < P; first += spr[q], ++q) st->send_rows[q] = sum(c + first, spr[q]);
  for (int64_t p = 0; p < P; ++p) st->recv_rows[p] = sum(rc + p * n_me, n_me);

  auto rows = nn::gather_token_rows(x, *plan);
  auto received = all_to_all_rows(group_, rows, st->send_rows, st->recv_rows, timer_.get());
  // Regroup: received rows come per source rank, each block by slot; the banks want them by slot.
  const int64_t R = received.size(0);
  auto slot_ids = at::arange(n_me, recv_counts.options()).repeat({P});
  auto slot_of_row = at::repeat_interleave(slot_ids, recv_counts, 0, R);
  st->regroup = std::get<1>(at::sort(slot_of_row, /*stable=*/true, 0, false));
  plan->counts_E = recv_counts.view({P, n_me}).sum(0);
  plan->host_counts.clear();
  if (need_host_counts)
    for (int64_t s = 0; s < n_me; ++s) {
      int64_t n = 0;
      for (int64_t p = 0; p < P; ++p) n += rc[p * n_me + s];
      plan->host_counts.push_back(n);
    }
  plan->state = st;
  return received.index_select(0, st->regroup);
}

at::Tensor AllToAllDispatcher::combine(const at::Tensor& y_in, const at::Tensor& w, const nn::DispatchPlan& plan) {
  const auto& st = *static_cast<const PlanState*>(plan.state.get());
  at::Tensor y = y_in;
  // See the header: the way back must be in the graph on every rank once any rank trains here or upstream.
  if (force_backward_ && at::GradMode::is_enabled() && !y.requires_grad()) y = y.detach().requires_grad_(true);
  auto by_source = at::empty_like(y).index_copy(0, st.regroup, y);
  auto back = all_to_all_rows(group_, by_source, st.recv_rows, st.send_rows, timer_.get());
  return local_.combine(back, w, plan);
}

}  // namespace esft::dist
