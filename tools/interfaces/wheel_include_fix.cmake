# Include after rosidl_generate_interfaces() in an interface package built from the ROS 2 PyPI
# wheels. Their exported CMake targets carry include paths from the wheels' build machine
# (/opt/python/...), which CMake rejects at generate time; point them at this machine's
# Python and NumPy headers instead. A full ROS 2 install never has such paths, so this is a
# no-op there. Runs in the including directory's scope (include(), not a function), so it
# sees that directory's imported targets.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
get_property(_wheel_fix_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_wheel_fix_target IN LISTS _wheel_fix_imported)
  get_target_property(_wheel_fix_dirs ${_wheel_fix_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_wheel_fix_dirs AND "${_wheel_fix_dirs}" MATCHES "/opt/python/")
    set(_wheel_fix_fixed "")
    foreach(_wheel_fix_dir IN LISTS _wheel_fix_dirs)
      if("${_wheel_fix_dir}" MATCHES "/opt/python/")
        list(APPEND _wheel_fix_fixed ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      else()
        list(APPEND _wheel_fix_fixed "${_wheel_fix_dir}")
      endif()
    endforeach()
    list(REMOVE_DUPLICATES _wheel_fix_fixed)
    set_target_properties(${_wheel_fix_target}
      PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_wheel_fix_fixed}")
  endif()
endforeach()

# rosidl_generator_py gives this package's own <pkg>__rosidl_generator_py target the Python
# and NumPy include dirs as PUBLIC, and installs it with an export. With the venv inside the
# source tree (./.venv), CMake refuses to export such a path at generate time ("prefixed in
# the source directory"), so keep those dirs for the build only ($<BUILD_INTERFACE:...>);
# a downstream interface package adds its own. No-op when the venv is outside the tree.
set(_wheel_fix_python_dirs ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
get_property(_wheel_fix_own DIRECTORY PROPERTY BUILDSYSTEM_TARGETS)
foreach(_wheel_fix_target IN LISTS _wheel_fix_own)
  get_target_property(_wheel_fix_dirs ${_wheel_fix_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _wheel_fix_dirs)
    continue()
  endif()
  set(_wheel_fix_fixed "")
  set(_wheel_fix_changed FALSE)
  foreach(_wheel_fix_dir IN LISTS _wheel_fix_dirs)
    set(_wheel_fix_in_source FALSE)
    if(_wheel_fix_dir IN_LIST _wheel_fix_python_dirs)
      cmake_path(IS_PREFIX CMAKE_CURRENT_SOURCE_DIR "${_wheel_fix_dir}" NORMALIZE
        _wheel_fix_in_source)
    endif()
    if(_wheel_fix_in_source)
      list(APPEND _wheel_fix_fixed "$<BUILD_INTERFACE:${_wheel_fix_dir}>")
      set(_wheel_fix_changed TRUE)
    else()
      list(APPEND _wheel_fix_fixed "${_wheel_fix_dir}")
    endif()
  endforeach()
  if(_wheel_fix_changed)
    set_target_properties(${_wheel_fix_target}
      PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_wheel_fix_fixed}")
  endif()
endforeach()
