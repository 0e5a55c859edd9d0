// What machine this is, for benchmark and simulation reports.
#pragma once

#include <cstddef>
#include <string>

namespace fedge {

std::string cpu_model();        // "AMD EPYC 9R14 ...", from /proc/cpuinfo
int online_cores();             // cores this process may run on
double peak_rss_megabytes();    // high-water resident set size of this process
double rss_megabytes();         // resident set size now (/proc/self/statm; 0 where unknown)
std::string machine_summary();  // "AMD EPYC ... (2 cores), 23.4 GiB RAM"
// Bytes the C/C++ heap has handed out and not taken back (glibc mallinfo2;
// 0 elsewhere): unlike RSS it drops when memory is freed, so the difference
// around building or freeing some objects is what they hold.
std::size_t heap_in_use_bytes();

}  // namespace fedge
