package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/storage"
)

// S3Config puts the conversion files (uploads, outputs) in a bucket of an
// S3-compatible server instead of the data directory. The item records
// stay where they were: in Redis with several managers, in the data
// directory with one. Farms get presigned URLs with their job leases and
// hold no credentials.
//
// The credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
// (and AWS_SESSION_TOKEN), which TakeEnvCredentials reads, or from an AWS
// shared credentials file. They are not configuration keys: a config file
// or a flag would show them to whoever reads it or ps.
type S3Config struct {
	// Bucket enables S3 storage.
	Bucket   string `koanf:"s3_bucket"`
	Endpoint string `koanf:"s3_endpoint"`
	// PublicEndpoint is the server as farms and browsers reach it, for
	// the presigned URLs; empty: Endpoint.
	PublicEndpoint string `koanf:"s3_public_endpoint"`
	Region         string `koanf:"s3_region"`
	// Prefix goes before every key, to share a bucket ("drover/").
	Prefix    string `koanf:"s3_prefix"`
	PathStyle bool   `koanf:"s3_path_style"`
	// Insecure talks plain HTTP (a server on loopback or a private
	// network); an http:// endpoint says the same.
	Insecure        bool   `koanf:"s3_insecure"`
	CredentialsFile string `koanf:"s3_credentials_file"`
	Profile         string `koanf:"s3_profile"`
	CreateBucket    bool   `koanf:"s3_create_bucket"`
	// PresignTTL is how long the presigned URLs of job leases live.
	PresignTTL time.Duration `koanf:"s3_presign_ttl"`

	accessKey, secretKey, sessionToken string
}

// TakeEnvCredentials reads the S3 credentials from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN and removes them from the
// environment, so that no process started later (a farm's instances)
// inherits them. Without S3 storage it leaves them alone: they are not
// drover's then.
func (c *S3Config) TakeEnvCredentials() {
	if !c.Enabled() {
		return
	}
	c.accessKey, c.secretKey, c.sessionToken = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"),
		os.Getenv("AWS_SESSION_TOKEN")
	for _, n := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		_ = os.Unsetenv(n)
	}
}

// SetCredentials sets the S3 credentials, for callers that embed drover
// and tests.
func (c *S3Config) SetCredentials(accessKey, secretKey string) {
	c.accessKey, c.secretKey = accessKey, secretKey
}

// Enabled reports whether the files go to S3.
func (c S3Config) Enabled() bool { return c.Bucket != "" }

// open connects to the bucket.
func (c S3Config) open(log *slog.Logger) (*storage.S3, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := storage.S3Config{Endpoint: c.Endpoint, PublicEndpoint: c.PublicEndpoint, Region: c.Region, Bucket: c.Bucket, Prefix: c.Prefix,
		PathStyle: c.PathStyle, Insecure: c.Insecure, AccessKey: c.accessKey, SecretKey: c.secretKey,
		SessionToken: c.sessionToken, CredentialsFile: c.CredentialsFile, Profile: c.Profile,
		CreateBucket: c.CreateBucket, Logger: log}
	if cfg.AccessKey != "" && cfg.CredentialsFile != "" {
		log.Info("S3 credentials from the environment; the credentials file is not read")
		cfg.CredentialsFile = ""
	}
	st, err := storage.NewS3(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("conversion storage: %w", err)
	}
	log.Info("conversion files in S3", "where", st.String())
	return st, nil
}

// localItems opens the item records in the data directory, for one
// manager whose files are in S3.
func localItems(dir string, log *slog.Logger, cleanups *cleanup.Stack) (items.Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	fs, err := storage.NewFS(dir)
	if err != nil {
		return nil, err
	}
	cleanups.PushFunc("item records", fs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	is, err := items.Open(ctx, fs, items.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	cleanups.PushFunc("items", is.Close)
	return is, nil
}
