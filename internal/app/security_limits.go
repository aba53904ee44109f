package app

// LimitsConfig: quotas and rate limits.
type LimitsConfig struct{}
