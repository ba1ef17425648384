//! The GPU's join of the step's gradients into the flat optimizer's vector
//! (`train::join`, `shaders/join.wgsl`): the kernel is valid WGSL, and the
//! operation (its twin on the CPU) in runs of six equals `cat`. The kernel
//! itself is compared with the parts in the browser suite, on WebGPU.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{assert_valid_wgsl, device};
use tabtune::train::join::{PARTS, join_in_runs};

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 values")
}

#[test]
fn the_join_kernel_is_valid_wgsl_with_workgroups_of_64() {
    assert_valid_wgsl("join", tabtune::gpu::JOIN, "join", 64);
}

#[test]
fn the_join_operation_in_runs_of_six_equals_cat() {
    // Two full runs and a partial one, an empty part among them.
    let lens = [96, 160, 0, 7, 160, 96, 15, 1, 96, 160, 33, 2, 5];
    assert!(lens.len() > 2 * PARTS);
    let parts: Vec<Tensor<1>> = lens
        .iter()
        .map(|&n| Tensor::<1>::random([n], Distribution::Default, &device()))
        .collect();
    let total = lens.iter().sum();
    let got = join_in_runs(parts.clone(), total, &device());
    let want = Tensor::cat(parts, 0);
    assert_eq!(values(got), values(want));
}
