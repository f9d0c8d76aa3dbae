//! The Docker fallback: a Redis container through testcontainers, used only when no server binary
//! is on PATH and no `--redis-url` was given.

use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Image pulls can be slow; a missing Docker engine fails at once.
const START_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) struct ContainerRedis {
    image: String,
    port: u16,
    // Dropping the handle stops and removes the container.
    _container: ContainerAsync<GenericImage>,
}

impl ContainerRedis {
    pub(super) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(super) fn image(&self) -> &str {
        &self.image
    }
}

/// Starts `image` (`name[:tag]`) with persistence off. The error is one line saying why Docker
/// could not be used.
pub(super) async fn start(image: &str) -> Result<ContainerRedis, String> {
    let (name, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let request = GenericImage::new(name, tag)
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_cmd(["redis-server", "--save", "", "--appendonly", "no"]);
    let container = match tokio::time::timeout(START_TIMEOUT, request.start()).await {
        Ok(Ok(container)) => container,
        Ok(Err(testcontainers::TestcontainersError::Client(e))) => {
            return Err(format!("unavailable ({e})"));
        }
        Ok(Err(e)) => return Err(format!("could not start {image}: {e}")),
        Err(_) => {
            return Err(format!(
                "{image} did not start within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
    };
    let port = container
        .get_host_port_ipv4(6379)
        .await
        .map_err(|e| format!("no host port for {image}: {e}"))?;
    Ok(ContainerRedis {
        image: image.to_owned(),
        port,
        _container: container,
    })
}

#[cfg(test)]
mod tests {
    /// This machine kind has no Docker engine: the fallback must fail fast with a clear reason.
    #[tokio::test]
    async fn docker_unavailable_is_a_clear_error() {
        if std::path::Path::new("/var/run/docker.sock").exists() {
            eprintln!("skipped: a Docker socket exists here");
            return;
        }
        let err = match super::start("redis:7").await {
            Ok(_) => panic!("a container started without Docker"),
            Err(e) => e,
        };
        assert!(err.starts_with("unavailable"), "{err}");
    }
}
