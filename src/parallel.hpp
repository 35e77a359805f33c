#pragma once
// A minimal parallel loop for offline work (decomposition, calibration). Items are handed out
// dynamically; each worker knows its index so it can keep its own scratch space. Results must
// not depend on the schedule: every item writes only its own outputs.

#include <cstdint>
#include <functional>

namespace qsl::detail {

/// Number of workers for a request: `threads` > 0 as given, 0 = hardware threads; never more
/// than `items`.
int worker_count(int threads, std::int64_t items);

/// Runs body(item, worker) for item in [0, items) on worker_count(threads, items) threads (the
/// caller is worker 0). The first exception thrown by any item is rethrown here after all
/// workers stop; the remaining items are skipped.
void parallel_for(std::int64_t items, int threads,
                  const std::function<void(std::int64_t item, int worker)>& body);

}  // namespace qsl::detail
