//! Fetching an upstream `.tar.gz` over http(s), bounded in time and size.

use std::time::Duration;

use super::{ArchiveLimits, SyncError};

/// Time limits for the download.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Fetches `url` into memory, refusing anything over `limits.max_archive_bytes`.
pub async fn download(url: &str, limits: ArchiveLimits) -> Result<Vec<u8>, SyncError> {
    let failed = |message: String| SyncError::Download {
        url: url.to_owned(),
        message,
    };
    let fetch = |source| SyncError::Fetch {
        url: url.to_owned(),
        source,
    };
    let too_big = |size: String| SyncError::ArchiveRefused {
        url: url.to_owned(),
        message: format!(
            "it is {size} bytes, over the limit of {} (raise --max-archive-bytes if this is expected)",
            limits.max_archive_bytes
        ),
    };
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DOWNLOAD_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(fetch)?;
    let mut response = client.get(url).send().await.map_err(fetch)?;
    if !response.status().is_success() {
        return Err(failed(format!("the server answered {}", response.status())));
    }
    if let Some(length) = response.content_length()
        && length > limits.max_archive_bytes
    {
        return Err(too_big(length.to_string()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limits.max_archive_bytes {
            return Err(too_big(format!("more than {}", limits.max_archive_bytes)));
        }
    }
    Ok(bytes)
}
