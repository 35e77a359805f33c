# cmake -DNM=nm -DOBJECTS="a.o;b.o" -P check_isa_objects.cmake
# Fails if an object built with -m flags (cpu/float_gemm_avx*.cpp.o) defines a global or weak
# symbol other than its own qsl::detail::cpu::float_gemm_block_* and its renamed Eigen
# namespace (qsl_eigen_*).
set(checked 0)
foreach(object IN LISTS OBJECTS)
  if(NOT object MATCHES "float_gemm_avx[0-9]*\\.cpp\\.o(bj)?$")
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  execute_process(COMMAND ${NM} -C --defined-only ${object} OUTPUT_VARIABLE symbols
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} failed on ${object}")
  endif()
  string(REPLACE "\n" ";" lines "${symbols}")
  foreach(line IN LISTS lines)
    # "address TYPE name": upper-case types (and u, V, W) are visible to the linker.
    if(NOT line MATCHES "^[0-9a-f]+ ([A-Zuvw]) (.*)$")
      continue()
    endif()
    set(type "${CMAKE_MATCH_1}")
    set(name "${CMAKE_MATCH_2}")
    if(name MATCHES "qsl_eigen_|qsl::detail::cpu::float_gemm_block_|^DW\\.ref\\.__gxx_personality")
      continue()
    endif()
    message(FATAL_ERROR "${object} defines '${name}' (type ${type}): a shared symbol "
                        "built with AVX flags")
  endforeach()
endforeach()
if(checked EQUAL 0)
  message(FATAL_ERROR "no float_gemm_avx*.cpp object among: ${OBJECTS}")
endif()
message(STATUS "checked ${checked} objects")
