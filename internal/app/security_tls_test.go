package app

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/certtest"
)

func TestTLSConfigChecks(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	srv := ca.Server(t)
	var r reloads

	_, err := TLSConfig{TLSCert: srv.CertFile}.manager(&r)
	require.ErrorIs(t, err, errTLSPair)
	_, err = TLSConfig{FarmCA: ca.File}.manager(&r)
	require.ErrorContains(t, err, "--farm-ca needs --tls-cert")
	_, err = TLSConfig{TLSCert: srv.KeyFile, TLSKey: srv.KeyFile}.manager(&r)
	require.ErrorContains(t, err, srv.KeyFile, "a bad file fails the start, named")

	off, err := TLSConfig{}.manager(&r)
	require.NoError(t, err)
	require.Nil(t, off.listener, "no TLS by default")
	require.Empty(t, r.hooks)

	on, err := TLSConfig{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, FarmCA: ca.File}.manager(&r)
	require.NoError(t, err)
	require.NotNil(t, on.listener)
	require.NotNil(t, on.farms)
	require.True(t, on.requireFarmCert)
	require.Len(t, r.hooks, 2)
	require.NoError(t, r.Reload())

	_, _, err = FarmTLSConfig{TLSClientCert: srv.CertFile}.farm(&r)
	require.ErrorContains(t, err, "--tls-client-cert and --tls-client-key go together")
	ln, client, err := FarmTLSConfig{}.farm(&r)
	require.NoError(t, err)
	require.Nil(t, ln)
	require.Nil(t, client, "the agent's own client")
}
