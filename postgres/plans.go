package postgres

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// IndexedQuery is one of the statements the service runs on every request
// or batch, with the index it must be executed through however large its
// table grows, and example arguments to plan it with.
type IndexedQuery struct {
	Name  string
	SQL   string
	Args  []any
	Table string
	Index string
}

// IndexedQueries returns the hot statements whose plans must stay index
// scans: GetOrders' first and later pages for userID, the relay's claim and
// its look-up of parked keys (text and binary), and the inbox processor's
// claim, with the batch sizes the workers use.
func IndexedQueries(userID string) []IndexedQuery {
	cursor := time.Now().UTC().Truncate(time.Microsecond)
	const anyID = "00000000-0000-7000-8000-000000000000"
	return []IndexedQuery{
		{Name: "GetOrders first page", SQL: listOrdersSQL, Args: []any{userID, 51},
			Table: "orders", Index: "orders_user_created"},
		{Name: "GetOrders next page", SQL: listOrdersAfterSQL, Args: []any{userID, cursor, anyID, 51},
			Table: "orders", Index: "orders_user_created"},
		{Name: "outbox relay claim", SQL: claimOutboxSQL, Args: []any{1000},
			Table: "outbox", Index: "outbox_unsent"},
		{Name: "inbox processor claim", SQL: claimInboxSQL, Args: []any{50},
			Table: "inbox", Index: "inbox_pending"},
		{Name: "outbox parked keys (text)", SQL: parkedKeysSQL, Args: parkedKeysArgs("orders.events", false),
			Table: "outbox", Index: "outbox_parked"},
		{Name: "outbox parked keys (binary)", SQL: parkedKeysSQL, Args: parkedKeysArgs("payments.events.dlq", true),
			Table: "outbox", Index: "outbox_parked_bytes"},
	}
}

// parkedKeysArgs returns ParkedKeys' array arguments, as literals, for a
// relay batch of 1000 rows of topic with text keys or with binary ones.
func parkedKeysArgs(topic string, binary bool) []any {
	topics, keys := make([]string, 1000), make([]string, 1000)
	for i := range topics {
		topics[i], keys[i] = topic, "order-"+strconv.Itoa(i)
		if binary {
			keys[i] = fmt.Sprintf(`"\\xff00%04x"`, i)
		}
	}
	list := func(elems []string) string { return "{" + strings.Join(elems, ",") + "}" }
	if binary {
		return []any{"{}", "{}", list(topics), list(keys)}
	}
	return []any{list(topics), list(keys), "{}", "{}"}
}
