#include "packed_cache.hpp"

#include <map>
#include <mutex>

namespace qsl::ort {

std::shared_ptr<const packed_layer> shared_packed(const packed_key& key,
                                                  const std::function<cpu_weights()>& pack) {
  static std::mutex mutex;
  static std::map<packed_key, std::weak_ptr<const packed_layer>> entries;
  // Under the lock throughout: kernels are created at session creation, and a second kernel
  // of the same code must wait for the first one's packing rather than pack it again.
  const std::lock_guard<std::mutex> lock(mutex);
  for (auto it = entries.begin(); it != entries.end();)  // drop entries of ended sessions
    it = it->second.expired() ? entries.erase(it) : std::next(it);
  if (auto live = entries[key].lock()) return live;
  auto packed = std::make_shared<packed_layer>();  // in place: its grids' once_flag stays put
  packed->weights = pack();
  entries[key] = packed;
  return packed;
}

}  // namespace qsl::ort
