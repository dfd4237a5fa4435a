//! AWS SDK failures as the library's errors: the service and call, the service's error code,
//! and whether trying later may succeed. Classified as the SDK's own retry classifier does
//! (aws-runtime 1.10.2, `src/retries/classifiers.rs`: its throttling and transient error
//! codes; and 5xx, 429, timeouts and lost connections), so an error that outlived the SDK's
//! retries still says "try later" rather than looking like bad input.

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
// Every aws-sdk-* crate re-exports the same smithy types; these paths name them once.
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// `e`, from `call` on `service` ("ECR", "CloudFormation"), as an [`Error::Aws`].
pub fn sdk_error<E>(service: &str, call: impl Into<String>, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_owned);
    let transient = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || code.as_deref().is_some_and(|c| {
                    THROTTLING_ERRORS.contains(&c) || TRANSIENT_ERRORS.contains(&c)
                })
        }
        _ => false,
    };
    let message = match (&e, code.as_deref(), e.message()) {
        (SdkError::ServiceError(_), Some(code), Some(message)) => format!("{code}: {message}"),
        _ => DisplayErrorContext(&e).to_string(),
    };
    Error::Aws {
        service: service.to_owned(),
        call: call.into(),
        code,
        message,
        transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::head_bucket::HeadBucketError;
    use aws_sdk_s3::primitives::SdkBody;

    fn service_error(status: u16, code: &str) -> SdkError<HeadBucketError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("said no")
            .build();
        let response = HttpResponse::new(status.try_into().expect("status"), SdkBody::empty());
        SdkError::service_error(HeadBucketError::generic(meta), response)
    }

    #[test]
    fn throttling_and_5xx_are_transient_and_bad_input_is_not() {
        let throttled = sdk_error("ECR", "PutImage", service_error(400, "ThrottlingException"));
        assert!(throttled.is_transient());
        assert!(sdk_error("S3", "HeadBucket", service_error(503, "SlowDown")).is_transient());
        assert!(sdk_error("S3", "HeadBucket", service_error(500, "InternalError")).is_transient());
        let refused = sdk_error(
            "CloudFormation",
            "CreateChangeSet",
            service_error(400, "ValidationError"),
        );
        assert!(!refused.is_transient());
        assert_eq!(
            refused.to_string(),
            "CloudFormation CreateChangeSet: ValidationError: said no"
        );
        match refused {
            Error::Aws { code, .. } => assert_eq!(code.as_deref(), Some("ValidationError")),
            other => panic!("not an AWS error: {other:?}"),
        }
    }
}
