package client_test

import (
	"net/http"

	"github.com/gorilla/websocket"
)

func httpHandler(serve func(ws *websocket.Conn, pool string), up *websocket.Upgrader) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		serve(ws, r.URL.Query().Get("pool"))
	})
}
