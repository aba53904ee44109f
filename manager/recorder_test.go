package manager_test

import "net/http/httptest"

type responseRecorder = httptest.ResponseRecorder

func newRecorder() *responseRecorder { return httptest.NewRecorder() }
