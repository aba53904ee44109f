package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/internal/app"
)

// s3Flags are the flags of app.S3Config: conversion files in a bucket.
// The credentials are no flags: AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, or --s3-credentials-file.
func s3Flags(fs *pflag.FlagSet) {
	fs.String("s3-bucket", "", "keep conversion files in this bucket of an S3-compatible server (item records stay in --data or Redis); credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --s3-credentials-file")
	fs.String("s3-endpoint", "", "the S3 server: host:port or http(s)://host:port (default AWS S3)")
	fs.String("s3-public-endpoint", "", "the S3 server as farms and browsers reach it, named by presigned URLs (default --s3-endpoint)")
	fs.String("s3-region", "", "the bucket's region (default: ask the server)")
	fs.String("s3-prefix", "", "put every key below this prefix (ending in /) to share a bucket")
	fs.Bool("s3-path-style", false, "address the bucket in the URL path (most self-hosted servers), not in the host name")
	fs.Bool("s3-insecure", false, "talk plain HTTP to the S3 server, without TLS")
	fs.String("s3-credentials-file", "", "AWS shared credentials file with the S3 keys (when AWS_ACCESS_KEY_ID is not set)")
	fs.String("s3-profile", "", "profile of --s3-credentials-file (default \"default\")")
	fs.Bool("s3-create-bucket", false, "create the bucket if it does not exist")
	fs.Duration("s3-presign-ttl", conversion.DefaultPresignTTL, "how long the presigned URLs that farms get with their jobs live")
}

// filesWhere says where the conversion files are, for the banner.
func filesWhere(cc app.ConversionConfig) string {
	if cc.S3.Enabled() {
		return "bucket " + cc.S3.Bucket + ", records in " + coalesceData(cc.Data)
	}
	return coalesceData(cc.Data)
}
