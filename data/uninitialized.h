// std::vector storage whose new elements are left uninitialized by resize():
// for large buffers (a label volume is 268 MB for a 512 x 512 x 255 study) that
// their producer writes whole anyway. A value-initializing resize zero-fills
// them first, one serial pass that also takes every page fault on one thread;
// left uninitialized, the first write -- in parallel, slice by slice -- does.
// Only for trivial element types, and only where every element is written
// before it is read (each use says why that holds).
#pragma once
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace covidrate::data {

template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  static_assert(std::is_trivially_default_constructible_v<T>);
  using std::allocator<T>::allocator;
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialization: no value written
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using UninitializedVector = std::vector<T, UninitializedAllocator<T>>;

}  // namespace covidrate::data
