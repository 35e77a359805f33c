#pragma once
// Reading NumPy .npz archives (np.savez, np.savez_compressed) with libzip: one typed_array per
// entry, each checked as a .npy file. Every size is checked before anything is allocated.

#include <zip.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "data_files.hpp"

namespace qsl::tools {

/// Entries of at most this many bytes each (uncompressed).
inline constexpr std::uint64_t max_npz_entry_bytes = std::uint64_t{1} << 34;

inline std::vector<typed_array> read_npz(const std::string& path) {
  const std::string where = "'" + path + "': ";
  int code = 0;
  std::unique_ptr<zip_t, int (*)(zip_t*)> archive(zip_open(path.c_str(), ZIP_RDONLY, &code),
                                                  zip_close);
  if (!archive) {
    zip_error_t e;
    zip_error_init_with_code(&e, code);
    const std::string message = zip_error_strerror(&e);
    zip_error_fini(&e);
    throw qsl::error(where + "not a readable .npz (zip) file: " + message);
  }
  const zip_int64_t entries = zip_get_num_entries(archive.get(), 0);
  detail::require(entries > 0, where + "the archive holds no arrays");
  std::vector<typed_array> out;
  std::set<std::string> names;
  for (zip_int64_t i = 0; i < entries; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    detail::require(zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &st) == 0 &&
                        (st.valid & ZIP_STAT_NAME) && (st.valid & ZIP_STAT_SIZE),
                    where + "entry " + std::to_string(i) + " cannot be read");
    std::string name = st.name;
    const std::string entry = where + "entry '" + name + "': ";
    detail::require(name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0,
                    entry + "not a .npy array (np.savez writes NAME.npy entries)");
    detail::require(st.size <= max_npz_entry_bytes,
                    entry + std::to_string(st.size) + " bytes; at most " +
                        std::to_string(max_npz_entry_bytes));
    name.resize(name.size() - 4);
    detail::require(names.insert(name).second, entry + "a second array of that name");
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> file(
        zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(i), 0), zip_fclose);
    detail::require(file != nullptr, entry + "cannot be opened: " +
                                         zip_strerror(archive.get()));
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(st.size));
    std::uint64_t done = 0;
    while (done < st.size) {
      const zip_int64_t n = zip_fread(file.get(), bytes.data() + done, st.size - done);
      detail::require(n > 0, entry + "truncated or corrupt (read " + std::to_string(done) +
                                 " of " + std::to_string(st.size) + " bytes)");
      done += static_cast<std::uint64_t>(n);
    }
    typed_array a = parse_npy(bytes, entry);
    a.name = std::move(name);
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace qsl::tools
