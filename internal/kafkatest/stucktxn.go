package kafkatest

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// StuckTransaction makes c's transaction coordinator answer every
// InitProducerId of transactional id id with CONCURRENT_TRANSACTIONS and
// describe id's transaction in state, as a real coordinator does whose
// transaction of id ended (state PrepareAbort, PrepareCommit or
// PrepareEpochFence) but cannot write its marker to a partition without a
// leader. Other ids are served as usual.
func StuckTransaction(c *kfake.Cluster, id, state string) {
	c.ControlKey(int16(kmsg.InitProducerID), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.InitProducerIDRequest)
		if req.TransactionalID == nil || *req.TransactionalID != id {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})
	c.ControlKey(int16(kmsg.DescribeTransactions), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.DescribeTransactionsRequest)
		if len(req.TransactionalIDs) != 1 || req.TransactionalIDs[0] != id {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID, st.State, st.ProducerID = id, state, 1
		resp.TransactionStates = append(resp.TransactionStates, st)
		return resp, nil, true
	})
}
