package webhook_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/drover-dev/drover/conversion/webhook"
)

// A receiver checks every webhook before it trusts it, and drops a
// delivery id it has processed already.
func ExampleVerify() {
	secret := "the secret shared with drover"
	seen := map[string]bool{} // in a real receiver: kept for the tolerance, and locked
	http.HandleFunc("/drover-webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, r.Header, body, 5*time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized) // a 4xx: drover does not retry
			return
		}
		id := r.Header.Get(webhook.HeaderDelivery)
		if seen[id] {
			return // a retry of a delivery already handled: answer 2xx again
		}
		seen[id] = true
		// Decode body into a webhook.Payload and act on it.
	})
}

// The conversion API owns a Sender: it checks a webhook URL when an item
// is created, sends when the item's conversion ends, keeps each record
// with the item, and hands pending ones to the next Sender.
func ExampleSender() {
	// In a real owner: the item store, where each record is kept with its
	// item and shown in its data as rec.Public().
	var (
		load = func() []webhook.Record { return nil }
		save = func(...webhook.Record) {}
	)
	s, err := webhook.New(webhook.Options{
		Secret: webhook.Secret("from the configuration"),
		Report: func(rec webhook.Record) { save(rec) },
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Resume(load()); err != nil { // what the last run left pending
		log.Print(err)
	}
	if err := s.Start(); err != nil {
		log.Fatal(err)
	}

	const url = "https://hooks.example.com/conversions"
	if err := s.ValidateURL(url); err != nil { // at upload: {"ERROR": err.Error()}
		log.Print(err)
	}
	if _, err := s.Send(webhook.Delivery{URL: url, Payload: webhook.Payload{
		ID: "item-1", Name: "part.step", ConversionState: "SUCCESS", Files: []string{"part.glb", "part.png"},
	}}); err != nil {
		log.Print(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending, err := s.Stop(ctx)
	if err != nil {
		log.Print(err)
	}
	save(pending...) // resumed at the next start
}
