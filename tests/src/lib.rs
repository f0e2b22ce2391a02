//! End-to-end test support for fluxgate.
//!
//! [`testenv`] starts a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) on loopback, shares one per test binary, and gives
//! each test a throwaway namespace. The tests that drive fluxgate against it
//! live under `tests/`. [`runner`] stands in for the kubelet: it runs the
//! reconciler Deployments the operator creates as local processes.

pub mod gitserver;
pub mod helm;
pub mod journey;
pub mod onboarding;
pub mod runner;
pub mod stack;
pub mod testenv;
pub mod wait;

pub use testenv::{
    BIN_DIR_ENV, CertificateAuthority, ControlPlane, Error, FIELD_MANAGER, IssuedCert, KEEP_ENV,
    TEST_LABEL, deploy_crds_dir, install_crds, load_crds, service_account_token, shared,
    with_temp_ns,
};
