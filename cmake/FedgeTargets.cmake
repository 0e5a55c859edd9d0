# fedge_library(NAME DEPS dep... [EXCLUDE src/file.cpp...])
# Builds fedge_<NAME> from <folder>/src/*.cpp with <folder>/include as its public
# include root (headers live at include/fedge/<NAME>/). EXCLUDE leaves out the
# sources a smaller target of the folder builds (one without libtorch, which
# the fuzz build compiles too); list that target in DEPS. A folder with no
# sources yet becomes an INTERFACE target so the dependency graph stays whole.
function(fedge_library name)
  cmake_parse_arguments(ARG "" "" "DEPS;PRIVATE_DEPS;EXCLUDE" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  foreach(excluded IN LISTS ARG_EXCLUDE)
    list(REMOVE_ITEM sources ${CMAKE_CURRENT_SOURCE_DIR}/${excluded})
  endforeach()
  set(target fedge_${name})
  if(sources)
    add_library(${target} STATIC ${sources})
    target_include_directories(${target} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
    target_link_libraries(${target} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  else()
    add_library(${target} INTERFACE)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/include)
      target_include_directories(${target} INTERFACE ${CMAKE_CURRENT_SOURCE_DIR}/include)
    endif()
    target_link_libraries(${target} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# fedge_use_portable_switch(TARGET)
# Defines FEDGE_PORTABLE=1 for TARGET's own sources in a FEDGE_PORTABLE build:
# the places that pick an instruction-set path at run time start on the
# portable one. Private, so the targets that link TARGET compile unchanged.
function(fedge_use_portable_switch target)
  if(FEDGE_PORTABLE)
    target_compile_definitions(${target} PRIVATE FEDGE_PORTABLE=1)
  endif()
endfunction()

# fedge_parser_library(NAME SOURCES src/file.cpp... DEPS dep... [PRIVATE_DEPS dep...])
# A folder's torch-free parser of untrusted input as a target of its own,
# fedge_<NAME>, with the folder's include root: the folder's main library links
# it, and the fuzz build (tests/fuzz) builds it alone, configuring the folder
# with FEDGE_TORCH_FREE_ONLY (the folder's CMakeLists.txt stops after its
# torch-free targets).
function(fedge_parser_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  list(TRANSFORM ARG_SOURCES PREPEND ${CMAKE_CURRENT_SOURCE_DIR}/)
  add_library(fedge_${name} STATIC ${ARG_SOURCES})
  target_include_directories(fedge_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(fedge_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  set_target_properties(fedge_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# fedge_capnp_schema(NAME SCHEMA)
# Generates C++ from <folder>/schema/SCHEMA into the build tree and compiles it
# into fedge_<NAME>. The generated header is on the target's public include
# path for one reader outside the folder: the layer that owns the C++ form of
# the schema's opaque parts (protocol/opaque.h; scripts/check-layers.sh says who
# may include it). Every other public header exposes plain structs.
function(fedge_capnp_schema name schema)
  set(CAPNPC_SRC_PREFIX ${CMAKE_CURRENT_SOURCE_DIR}/schema)
  set(CAPNPC_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR}/generated)
  file(MAKE_DIRECTORY ${CAPNPC_OUTPUT_DIR})
  capnp_generate_cpp(srcs hdrs schema/${schema})
  target_sources(fedge_${name} PRIVATE ${srcs} ${hdrs})
  target_include_directories(fedge_${name} PUBLIC ${CAPNPC_OUTPUT_DIR})
endfunction()

# fedge_embed_files(TARGET HEADER NAMESPACE FILES file...)
# Builds the FILES (paths relative to the folder) into TARGET: a generated
# header HEADER (e.g. fedge/serving/site_assets.h, on TARGET's private include
# path) holds each file's bytes as `std::string_view <name>` in NAMESPACE
# (cmake/embed-files.cmake). Regenerated when a file changes, so a served page
# is part of the binary and needs nothing at run time.
# This folder, for the scripts the functions run: the fuzz build (tests/fuzz)
# includes this file from another project, so not PROJECT_SOURCE_DIR.
set(fedge_cmake_dir ${CMAKE_CURRENT_LIST_DIR})
function(fedge_embed_files target)
  cmake_parse_arguments(ARG "" "HEADER;NAMESPACE" "FILES" ${ARGN})
  list(TRANSFORM ARG_FILES PREPEND ${CMAKE_CURRENT_SOURCE_DIR}/)
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/embedded)
  set(out ${dir}/${ARG_HEADER})
  add_custom_command(OUTPUT ${out}
                     COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DNAMESPACE=${ARG_NAMESPACE} "-DFILES=${ARG_FILES}"
                             -P ${fedge_cmake_dir}/embed-files.cmake
                     DEPENDS ${ARG_FILES} ${fedge_cmake_dir}/embed-files.cmake
                     COMMENT "Embedding ${ARG_HEADER}" VERBATIM)
  target_sources(${target} PRIVATE ${out})
  target_include_directories(${target} PRIVATE ${dir})
endfunction()
