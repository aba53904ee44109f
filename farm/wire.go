package farm

import "github.com/drover-dev/drover/farmapi"

// The wire types are farmapi's; these names keep the farm's API whole for
// programs that use the farm package alone.
//
//nolint:revive // one comment for the whole group of aliases
type (
	State             = farmapi.State
	Instance          = farmapi.Instance
	RegisterRequest   = farmapi.RegisterRequest
	RegisterResponse  = farmapi.RegisterResponse
	Heartbeat         = farmapi.Heartbeat
	HeartbeatResponse = farmapi.HeartbeatResponse
	StartRequest      = farmapi.StartRequest
	StartOptions      = farmapi.StartOptions
	FarmStatus        = farmapi.FarmStatus
)

// Instance states and protocols, and the farm API's paths: see farmapi.
const (
	StateStarting = farmapi.StateStarting
	StateReady    = farmapi.StateReady
	StateStopping = farmapi.StateStopping
	StateExited   = farmapi.StateExited

	ProtocolNative = farmapi.ProtocolNative
	ProtocolDial   = farmapi.ProtocolDial
	ProtocolStdio  = farmapi.ProtocolStdio
	ProtocolStream = farmapi.ProtocolStream

	PathFarms     = farmapi.PathFarms
	PathInstances = farmapi.PathInstances
	PathStatus    = farmapi.PathStatus
	PathInstance  = farmapi.PathInstance
)
