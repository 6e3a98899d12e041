// Flag parsing shared by the subcommands: cxxopts' errors rewritten to name the flag, and the
// checks every numeric flag needs (finite, in range).
#pragma once
#include <cxxopts.hpp>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>

namespace esft::cli {

// o.parse(argc, argv), with "Argument 'nan' failed to parse" turned into
// "--learning-rate \"nan\": not a valid value (a finite number)" and the like.
cxxopts::ParseResult parse_flags(cxxopts::Options& o, int argc, char** argv);

// Fails naming the flag unless lo <= v <= hi (and v finite).
double flag_number(const cxxopts::ParseResult& a, const std::string& flag, double lo, double hi);
int64_t flag_int(const cxxopts::ParseResult& a, const std::string& flag, int64_t lo, int64_t hi);

// Fails "--NAME is required (see --help)" for the first of `names` not given.
void require_flags(const cxxopts::ParseResult& a, std::initializer_list<const char*> names);

// --activation-checkpointing (every layer: -1) or --checkpoint-layers N (the first N), not both.
int64_t checkpoint_layers(const cxxopts::ParseResult& a);

}  // namespace esft::cli

namespace esft::cli {

// Long flag names of a subcommand's options -> whether the flag is a switch (takes no value).
std::map<std::string, bool> flag_names(const cxxopts::Options& o);

// The options of the subcommands the SageMaker entrypoint drives (defined beside each command).
cxxopts::Options train_flags();
cxxopts::Options score_flags();
cxxopts::Options select_flags();

}  // namespace esft::cli
