package app

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestS3TakeEnvCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-example")

	var off S3Config
	off.TakeEnvCredentials()
	require.Equal(t, "AKIDEXAMPLE", os.Getenv("AWS_ACCESS_KEY_ID"), "without S3 the keys are not drover's")
	require.Empty(t, off.accessKey)

	on := S3Config{Bucket: "b"}
	on.TakeEnvCredentials()
	require.Equal(t, "AKIDEXAMPLE", on.accessKey)
	require.Equal(t, "secret-example", on.secretKey)
	_, set := os.LookupEnv("AWS_ACCESS_KEY_ID")
	require.False(t, set, "taken out of the environment that instances inherit")
	_, set = os.LookupEnv("AWS_SECRET_ACCESS_KEY")
	require.False(t, set)
}
