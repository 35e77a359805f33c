# cmake -DMODE=find_package|add_subdirectory -DQSL_SOURCE_DIR=... -DQSL_BINARY_DIR=...
#       -DWORK_DIR=... [-DQSL_VERSION=x.y.z] [-DCONFIG=...] [-DGENERATOR=...] [-DMAKE_PROGRAM=...]
#       [-DCXX_COMPILER=...] [-DPREFIX_PATH=a|b] -P run_consumer.cmake
# Configures, builds and runs tests/package/consumer; any failing step is a FATAL_ERROR.
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

find_program(consumer consumer PATHS "${build_dir}" "${build_dir}/Release" NO_DEFAULT_PATH)
if(NOT consumer)
  message(FATAL_ERROR "consumer executable not found under ${build_dir}")
endif()
run_step("run of the consumer" "${consumer}")
string(STRIP "${step_output}" step_output)
message(STATUS "${MODE}: ${step_output}")
if(NOT QSL_VERSION)
  set(QSL_VERSION "[0-9]+\\.[0-9]+\\.[0-9]+")
endif()
if(NOT step_output MATCHES "^qsl consumer ok ${QSL_VERSION}$")
  message(FATAL_ERROR "expected 'qsl consumer ok ${QSL_VERSION}', got:\n${step_output}")
endif()
