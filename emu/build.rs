// The driver library is found by the dynamic loader under the name libcuda.so.1 (the C
// test program dlopens that name; cudarc tries libcuda.so first): give the cdylib that
// SONAME so both names resolve to one loaded copy.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
