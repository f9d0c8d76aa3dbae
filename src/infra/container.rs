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

/// Why Docker could not give us a Redis.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unavailable")]
    Unavailable(#[source] testcontainers::TestcontainersError),
    #[error("could not start {image}")]
    Start {
        image: String,
        #[source]
        source: testcontainers::TestcontainersError,
    },
    #[error("{image} did not start within {seconds} s")]
    Timeout { image: String, seconds: u64 },
    #[error("no host port for {image}")]
    Port {
        image: String,
        #[source]
        source: testcontainers::TestcontainersError,
    },
}

/// Starts `image` (`name[:tag]`) with persistence off.
pub(super) async fn start(image: &str) -> Result<ContainerRedis, ContainerError> {
    let (name, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let request = GenericImage::new(name, tag)
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_cmd(["redis-server", "--save", "", "--appendonly", "no"]);
    let container = match tokio::time::timeout(START_TIMEOUT, request.start()).await {
        Ok(Ok(container)) => container,
        Ok(Err(e @ testcontainers::TestcontainersError::Client(_))) => {
            return Err(ContainerError::Unavailable(e));
        }
        Ok(Err(source)) => {
            return Err(ContainerError::Start {
                image: image.to_owned(),
                source,
            });
        }
        Err(_) => {
            return Err(ContainerError::Timeout {
                image: image.to_owned(),
                seconds: START_TIMEOUT.as_secs(),
            });
        }
    };
    let port = container
        .get_host_port_ipv4(6379)
        .await
        .map_err(|source| ContainerError::Port {
            image: image.to_owned(),
            source,
        })?;
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
        assert!(
            matches!(err, super::ContainerError::Unavailable(_)),
            "{err}"
        );
    }
}
