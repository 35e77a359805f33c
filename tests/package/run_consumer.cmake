# cmake -DMODE=find_package|add_subdirectory -DQSL_SOURCE_DIR=... -DQSL_BINARY_DIR=...
#       -DWORK_DIR=... [-DQSL_VERSION=x.y.z] [-DCONFIG=...] [-DGENERATOR=...] [-DMAKE_PROGRAM=...]
#       [-DCXX_COMPILER=...] [-DPREFIX_PATH=a|b] [-DFLAGS=<compiler flags, '|'-separated>]
#       [-DFLAG_SETS=name=flag|flag^name=...] [-DASAN=ON] [-DSHARED=OFF] -P run_consumer.cmake
# Configures, builds and runs tests/package/consumer; any failing step is a FATAL_ERROR.
# FLAGS become the consumer project's CMAKE_CXX_FLAGS: with add_subdirectory qsl is built with
# them too, as a user's flags would; with find_package only the consumers are (qsl was installed
# from this build). FLAG_SETS: one consumer per set, each compiled with its own flags after
# FLAGS, each run. ASAN builds the consumers alone with AddressSanitizer. SHARED=OFF builds the
# added qsl as static libraries.
cmake_minimum_required(VERSION 3.22)

# run_step(<what> <command> <args>...): PARSE_ARGV keeps an argument holding ';' whole.
function(run_step what)
  cmake_parse_arguments(PARSE_ARGV 1 step "" "" "")
  execute_process(COMMAND ${step_UNPARSED_ARGUMENTS}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    list(JOIN step_UNPARSED_ARGUMENTS " " command)
    message(FATAL_ERROR "${what} failed (${rc}):\n${command}\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

if(NOT CONFIG)
  set(CONFIG Release)
endif()
string(REPLACE "|" ";" PREFIX_PATH "${PREFIX_PATH}")
set(consumer_dir "${CMAKE_CURRENT_LIST_DIR}/consumer")
set(build_dir "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")  # fresh every run: no stale cache or install

set(configure_args -S "${consumer_dir}" -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release)
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()

if(FLAGS)
  string(REPLACE "|" " " FLAGS "${FLAGS}")
  list(APPEND configure_args "-DCMAKE_CXX_FLAGS=${FLAGS}")
endif()
if(ASAN)
  list(APPEND configure_args -DQSL_CONSUMER_ASAN=ON)
endif()
if(NOT FLAG_SETS)
  set(FLAG_SETS "plain=")
endif()
list(APPEND configure_args "-DQSL_CONSUMER_FLAG_SETS=${FLAG_SETS}")
if(DEFINED SHARED AND NOT SHARED)
  if(NOT MODE STREQUAL "add_subdirectory")
    message(FATAL_ERROR "SHARED=OFF needs MODE add_subdirectory (the install is of this build)")
  endif()
  list(APPEND configure_args -DQSL_SHARED=OFF)
endif()

if(WITH_ONNXRUNTIME AND MODE STREQUAL "find_package")
  list(APPEND configure_args -DQSL_CONSUMER_ONNXRUNTIME=ON)
endif()
if(WITH_ONNX)  # the onnx component too: find_package(qsl COMPONENTS onnx), qsl::onnx
  list(APPEND configure_args -DQSL_CONSUMER_ONNX=ON)
endif()

if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  run_step("install of qsl" ${CMAKE_COMMAND} --install "${QSL_BINARY_DIR}" --prefix "${prefix}"
           --config "${CONFIG}")
  list(PREPEND PREFIX_PATH "${prefix}")
elseif(MODE STREQUAL "add_subdirectory")
  # The consumer does not use CUDA: do not compile qsl's kernels again for it.
  list(APPEND configure_args "-DQSL_SOURCE_DIR=${QSL_SOURCE_DIR}" -DQSL_WITH_CUDA=OFF)
else()
  message(FATAL_ERROR "MODE must be find_package or add_subdirectory, not '${MODE}'")
endif()

if(PREFIX_PATH)
  list(JOIN PREFIX_PATH "\\;" prefix_arg)  # '\;' keeps it one argument of configure_args
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${prefix_arg}")
endif()

run_step("configure of the consumer" ${CMAKE_COMMAND} ${configure_args})
if(MODE STREQUAL "add_subdirectory")
  # As a subproject qsl must not build its own tests, benchmarks or examples.
  foreach(dir tests bench examples)
    if(EXISTS "${build_dir}/qsl/${dir}")
      message(FATAL_ERROR "qsl added as a subdirectory configured its ${dir}/")
    endif()
  endforeach()
endif()

cmake_host_system_information(RESULT cores QUERY NUMBER_OF_LOGICAL_CORES)
run_step("build of the consumer" ${CMAKE_COMMAND} --build "${build_dir}" --config Release
         --parallel ${cores})

if(NOT QSL_VERSION)
  set(QSL_VERSION "[0-9]+\\.[0-9]+\\.[0-9]+")
endif()
# ASan: leaks are reported too, and any report fails the run.
set(ENV{ASAN_OPTIONS} "detect_leaks=1:exitcode=23")
string(REPLACE "^" ";" sets "${FLAG_SETS}")
foreach(set IN LISTS sets)
  string(FIND "${set}" "=" eq)
  string(SUBSTRING "${set}" 0 ${eq} name)
  math(EXPR eq "${eq} + 1")
  string(SUBSTRING "${set}" ${eq} -1 flags)
  string(REPLACE "|" " " flags "${flags}")
  find_program(consumer_${name} consumer_${name} PATHS "${build_dir}" "${build_dir}/Release"
               NO_DEFAULT_PATH NO_CACHE)
  if(NOT consumer_${name})
    message(FATAL_ERROR "consumer_${name} not found under ${build_dir}")
  endif()
  run_step("run of consumer_${name} (flags: ${FLAGS} ${flags})" "${consumer_${name}}")
  string(STRIP "${step_output}" step_output)
  message(STATUS "${MODE} ${name}: ${step_output}")
  if(NOT step_output MATCHES "^qsl consumer ok ${QSL_VERSION}$")
    message(FATAL_ERROR "consumer_${name}: expected 'qsl consumer ok ${QSL_VERSION}', got:\n"
                        "${step_output}")
  endif()
endforeach()
