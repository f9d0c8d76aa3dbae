//! gRPC clients to one server, with the timeouts and secrets every call carries.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::SuiteFailure;
use crate::proto::{
    fleet_client::FleetClient, monitor_client::MonitorClient,
    rate_limiter_client::RateLimiterClient,
};

/// No call may hang a run: connecting and every unary call are bounded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ServiceClients {
    pub endpoint: String,
    pub rate: RateLimiterClient<Channel>,
    fleet: FleetClient<Channel>,
    monitor: MonitorClient<Channel>,
    fleet_secret: Option<String>,
    monitor_secret: Option<String>,
}

/// Connects to `endpoint` (`host:port` or a URL). Secrets, when given, go with Fleet / Monitor calls.
pub async fn connect(
    endpoint: &str,
    fleet_secret: Option<String>,
    monitor_secret: Option<String>,
) -> Result<ServiceClients, tonic::transport::Error> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let channel = Endpoint::from_shared(url)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(ServiceClients {
        endpoint: endpoint.to_owned(),
        rate: RateLimiterClient::new(channel.clone()),
        fleet: FleetClient::new(channel.clone()),
        monitor: MonitorClient::new(channel),
        fleet_secret,
        monitor_secret,
    })
}

impl ServiceClients {
    /// A Fleet client and a request carrying the fleet secret, if any.
    pub fn fleet<T>(&self, message: T) -> (FleetClient<Channel>, tonic::Request<T>) {
        (
            self.fleet.clone(),
            with_secret(message, "x-fleet-secret", self.fleet_secret.as_deref()),
        )
    }

    /// A Monitor client and a request carrying the monitor secret, if any.
    pub fn monitor<T>(&self, message: T) -> (MonitorClient<Channel>, tonic::Request<T>) {
        (
            self.monitor.clone(),
            with_secret(message, "x-monitor-secret", self.monitor_secret.as_deref()),
        )
    }

    pub fn rate(&self) -> RateLimiterClient<Channel> {
        self.rate.clone()
    }
}

fn with_secret<T>(message: T, header: &'static str, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret
        && let Ok(value) = secret.parse()
    {
        request.metadata_mut().insert(header, value);
    }
    request
}

/// Unwraps a call that must succeed, naming the step when it did not.
pub(crate) fn ok<T>(
    step: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, SuiteFailure> {
    result.map(tonic::Response::into_inner).map_err(|s| {
        SuiteFailure(format!(
            "{step}: call failed with {:?}: {}",
            s.code(),
            s.message()
        ))
    })
}

/// Checks that a call failed with `code`.
pub(crate) fn fails_with<T: std::fmt::Debug>(
    step: &str,
    code: tonic::Code,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<(), SuiteFailure> {
    fails_with_one_of(step, &[code], result).map(drop)
}

/// Checks that a call failed with one of `codes` (where the spec allows several); returns which.
pub(crate) fn fails_with_one_of<T: std::fmt::Debug>(
    step: &str,
    codes: &[tonic::Code],
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<tonic::Code, SuiteFailure> {
    let expected = match codes {
        [one] => format!("{one:?}"),
        many => format!("one of {many:?}"),
    };
    match result {
        Err(status) if codes.contains(&status.code()) => Ok(status.code()),
        Err(status) => Err(SuiteFailure(format!(
            "{step}: status: expected {expected}, actual {:?} ({})",
            status.code(),
            status.message()
        ))),
        Ok(response) => Err(SuiteFailure(format!(
            "{step}: status: expected {expected}, actual OK with {:?}",
            response.into_inner()
        ))),
    }
}
