#pragma once
// The one place the version lives; CMakeLists.txt reads these three lines.
#define QSL_VERSION_MAJOR 0
#define QSL_VERSION_MINOR 1
#define QSL_VERSION_PATCH 0

namespace qsl {
inline constexpr int version_major = QSL_VERSION_MAJOR;
inline constexpr int version_minor = QSL_VERSION_MINOR;
inline constexpr int version_patch = QSL_VERSION_PATCH;
}  // namespace qsl
