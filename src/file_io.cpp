// Atomic file writes and bounded reads (declared in qsl/serialize.hpp).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "qsl/error.hpp"
#include "qsl/serialize.hpp"

namespace qsl {
namespace {

std::string system_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

// Creates the temporary file that write_file_atomically renames onto `path`, beside it so that
// rename() stays on one file system; `temp` receives its name. Throws qsl::error naming `path`.
int create_temporary_beside(const std::string& path, std::string& temp) {
  const std::filesystem::path target(path);
  std::error_code ec;
  if (std::filesystem::is_directory(target, ec))
    throw error("cannot write '" + path + "': it is a folder");
  const std::filesystem::path folder =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  temp = (folder / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  const int fd = mkstemp(temp.data());
  if (fd < 0) throw error(system_error("cannot create a temporary file for", path));
  return fd;
}

}  // namespace

void check_writable(const std::string& path) {
  detail::require(!path.empty(), "check_writable: the path is empty");
  std::string temp;
  const int fd = create_temporary_beside(path, temp);
  ::close(fd);
  ::unlink(temp.c_str());
}

void write_file_atomically(const std::string& path, const std::uint8_t* data, std::size_t size) {
  detail::require(!path.empty(), "write_file_atomically: the path is empty");
  detail::require(data != nullptr || size == 0, "write_file_atomically: data is null");
  std::string temp;
  const int fd = create_temporary_beside(path, temp);
  std::size_t written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd, data + written, size - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string message = system_error("cannot write", temp);
      ::close(fd);
      ::unlink(temp.c_str());
      throw error(message);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string message = system_error("cannot flush", temp);
    ::unlink(temp.c_str());
    throw error(message);
  }
  ::chmod(temp.c_str(), 0644);  // mkstemp creates 0600; a model file is meant to be shared
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string message = system_error("cannot rename the temporary file onto", path);
    ::unlink(temp.c_str());
    throw error(message);
  }
}

std::vector<std::uint8_t> read_file(const std::string& path, std::size_t max_bytes) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  detail::require(!ec && std::filesystem::is_regular_file(status),
                  "read_file: '" + path + "' is not a readable regular file");
  const auto size = std::filesystem::file_size(path, ec);
  detail::require(!ec, "read_file: cannot get the size of '" + path + "'");
  detail::require(size <= max_bytes, "read_file: '" + path + "' has " + std::to_string(size) +
                                         " bytes; the limit is " + std::to_string(max_bytes));
  std::ifstream in(path, std::ios::binary);
  detail::require(in.good(), system_error("read_file: cannot open", path));
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  detail::require(static_cast<std::uint64_t>(in.gcount()) == size,
                  "read_file: '" + path + "' changed while it was read");
  return bytes;
}

}  // namespace qsl
