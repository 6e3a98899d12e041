// Precompiled header for the LibTorch targets: the narrow ATen/torch headers we actually use.
#pragma once
#include <ATen/ATen.h>
#include <torch/types.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <map>
#include <string>
#include <vector>
