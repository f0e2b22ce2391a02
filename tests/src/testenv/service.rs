//! Reaching a process on this machine through a Kubernetes Service, the way
//! the API server reaches an in-cluster webhook.
//!
//! The API server runs with `--enable-aggregator-routing=true`, so it
//! resolves a webhook's `clientConfig.service` to one of the Service's
//! EndpointSlice addresses (instead of its ClusterIP, which needs
//! kube-proxy) while still verifying the serving certificate against the
//! Service's DNS name, `<name>.<namespace>.svc`. EndpointSlices refuse
//! loopback addresses, so the process listens on one of the machine's
//! non-loopback addresses ([`routable_ip`]) and [`route_service`] points
//! the Service there.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};

use super::{Error, FIELD_MANAGER};

/// The EndpointSlice manager label value of slices the harness writes (the
/// endpointslice controller leaves slices with another manager alone).
pub const SLICE_MANAGER: &str = "fluxgate.dev-testenv";

/// A non-loopback, non-link-local IPv4 address of this machine, which an
/// EndpointSlice may hold and a local listener can bind.
pub fn routable_ip() -> Result<IpAddr, Error> {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .map_err(|source| Error::Io {
            action: "run `ip -4 -o addr show scope global` to find",
            path: "a routable address".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            fields.find(|f| *f == "inet")?;
            let cidr = fields.next()?;
            cidr.split('/').next()?.parse::<IpAddr>().ok()
        })
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .ok_or(Error::NoRoutableAddress)
}

/// Server-side applies the Service `namespace/name` (when `service` is
/// `None`, a selector-less one with a single TCP port `port_name` on
/// `service_port`) and an EndpointSlice that sends that port to `backend`.
/// A Service that exists (for example from the chart) keeps its spec; only
/// the slice is added.
pub async fn route_service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port_name: &str,
    service_port: i32,
    backend: SocketAddr,
) -> Result<(), Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let apply = |what: &str| {
        let what = format!("{what} {namespace}/{name}");
        move |source| Error::Route { what, source }
    };
    if services
        .get_opt(name)
        .await
        .map_err(apply("read Service"))?
        .is_none()
    {
        let service = Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some(port_name.into()),
                    port: service_port,
                    target_port: Some(IntOrString::Int(i32::from(backend.port()))),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        services
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&service),
            )
            .await
            .map_err(apply("apply Service"))?;
    }
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}-testenv")),
            namespace: Some(namespace.into()),
            labels: Some(
                [
                    ("kubernetes.io/service-name".to_owned(), name.to_owned()),
                    (
                        "endpointslice.kubernetes.io/managed-by".to_owned(),
                        SLICE_MANAGER.to_owned(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        address_type: if backend.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![backend.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some(port_name.into()),
            port: Some(i32::from(backend.port())),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .patch(
            &format!("{name}-testenv"),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await
        .map_err(apply("apply EndpointSlice for Service"))?;
    Ok(())
}
