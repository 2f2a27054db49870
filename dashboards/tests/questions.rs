//! Every question against a real PostgreSQL OLAP database holding the known orders of
//! `common::FIXTURE`, with exact expected results.

mod common;

use brewlytics_dashboards::question::ParamValue;
use common::{csv, date, load_fixture, olap, run};

const MAY: [(&str, ParamValue); 0] = [];

#[tokio::test]
async fn the_clickstream_questions_count_the_events() {
    let (_db, pool) = olap("clickstream_questions").await;
    load_fixture(&pool).await;
    assert_eq!(
        csv(&pool, "clickstream-funnel", &MAY).await,
        "step,stage,count,rate\n\
         1,impressions,7,\n\
         2,clicks,3,0.4286\n\
         3,orders,1,0.3333\n"
    );
    assert_eq!(
        csv(&pool, "clickstream-funnel", &[("from", date("2024-05-02"))]).await,
        "step,stage,count,rate\n\
         1,impressions,2,\n\
         2,clicks,0,0.0000\n\
         3,orders,0,\n"
    );
    assert_eq!(
        csv(&pool, "product-conversion", &MAY).await,
        "day,product_id,product,impressions,clicks,ctr,orders,conversion_rate,revenue\n\
         2024-05-02,11,Croissant,2,0,0.0000,0,,0\n\
         2024-05-01,10,Caffè latte,4,2,0.5000,1,0.5000,6.00\n\
         2024-05-01,12,Tea,1,1,1.0000,0,0.0000,0\n"
    );
}

#[tokio::test]
async fn every_question_answers_exactly() {
    let (_db, pool) = olap("questions").await;
    load_fixture(&pool).await;

    // Cancelled order 3 (9.00) is not revenue.
    assert_eq!(
        csv(&pool, "daily-revenue", &MAY).await,
        "day,orders,items,revenue\n\
         2024-05-01,2,4,10.50\n\
         2024-05-02,1,3,8.50\n\
         2024-05-03,2,5,13.50\n"
    );

    let hours = run(&pool, "revenue-by-hour", &MAY).await;
    assert_eq!(hours.rows.len(), 24);
    let hours_csv = hours.to_csv();
    for line in [
        "8,2,17.00",
        "9,1,2.00",
        "14,1,7.00",
        "15,1,6.50",
        "0,0,0.00",
        "23,0,0.00",
    ] {
        assert!(
            hours_csv.lines().any(|l| l == line),
            "{line} in {hours_csv}"
        );
    }

    assert_eq!(
        csv(&pool, "sales-by-category", &MAY).await,
        "category,orders,items,revenue,share_pct\n\
         coffee,3,5,16.50,50.8\n\
         pastry,3,4,10.00,30.8\n\
         tea,2,3,6.00,18.5\n"
    );

    // Both latte versions (6.00 at 3.00, 10.50 at 3.50) are one product, named as it is now.
    assert_eq!(
        csv(&pool, "top-products", &MAY).await,
        "product_id,product,category,orders,items,revenue\n\
         10,Caffè latte,coffee,3,5,16.50\n\
         11,Croissant,pastry,3,4,10.00\n\
         12,Tea,tea,2,3,6.00\n"
    );
    assert_eq!(
        csv(&pool, "top-products", &[("limit", ParamValue::Integer(1))]).await,
        "product_id,product,category,orders,items,revenue\n\
         10,Caffè latte,coffee,3,5,16.50\n"
    );

    // Walk-ins are no customer; Bob's cancelled order does not count.
    assert_eq!(
        csv(&pool, "top-customers", &MAY).await,
        "customer_id,customer,orders,revenue,last_order_at\n\
         1,Ada,2,17.00,2024-05-02T08:05:00Z\n\
         2,Bob,1,7.00,2024-05-03T14:20:00Z\n"
    );

    assert_eq!(
        csv(&pool, "sales-by-employee", &MAY).await,
        "employee_id,employee,role,orders,items,revenue,average_order_value\n\
         1,Ana,barista,3,9,23.50,7.83\n\
         2,Ben,barista,2,3,9.00,4.50\n"
    );

    assert_eq!(
        csv(&pool, "store-comparison", &MAY).await,
        "store_id,store,city,orders,customers,revenue,average_order_value\n\
         1,Downtown,Lisbon,3,1,23.50,7.83\n\
         2,Harbour,Porto,2,1,9.00,4.50\n"
    );

    assert_eq!(
        csv(&pool, "average-order-value", &MAY).await,
        "day,orders,revenue,average_order_value\n\
         2024-05-01,2,10.50,5.25\n\
         2024-05-02,1,8.50,8.50\n\
         2024-05-03,2,13.50,6.75\n"
    );

    let open = run(&pool, "open-orders", &MAY).await;
    assert_eq!(
        open.columns,
        [
            "order_id",
            "status",
            "store_id",
            "store",
            "customer_id",
            "ordered_at",
            "age_minutes",
            "age_band",
            "items",
            "total"
        ]
    );
    let open_csv = open.to_csv();
    let lines: Vec<&str> = open_csv.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{open_csv}");
    assert!(lines[0].starts_with(
        "00000000-0000-0000-0000-000000000005,placed,2,Harbour,2,2024-05-03T14:20:00Z,"
    ));
    assert!(lines[0].ends_with(",over 60 min,2,7.00"), "{}", lines[0]);
    assert!(lines[1].starts_with(
        "00000000-0000-0000-0000-000000000006,preparing,1,Downtown,,2024-05-03T15:00:00Z,"
    ));
    assert!(lines[1].ends_with(",over 60 min,3,6.50"), "{}", lines[1]);

    assert_eq!(
        csv(&pool, "pending-items", &MAY).await,
        "product_id,product,quantity,orders,last_updated\n\
         10,Caffè latte,2,1,2024-05-03T14:20:00Z\n\
         12,Tea,2,1,2024-05-03T15:00:00Z\n\
         11,Croissant,1,1,2024-05-03T15:00:00Z\n"
    );

    assert_eq!(
        csv(&pool, "busiest-days", &MAY).await,
        "day,day_name,orders,revenue\n\
         2024-05-03,Friday,2,13.50\n\
         2024-05-01,Wednesday,2,10.50\n\
         2024-05-02,Thursday,1,8.50\n"
    );
    assert_eq!(
        csv(&pool, "busiest-days", &[("limit", ParamValue::Integer(1))]).await,
        "day,day_name,orders,revenue\n2024-05-03,Friday,2,13.50\n"
    );

    // Order 3's card payment (9.00) is of a cancelled order.
    assert_eq!(
        csv(&pool, "payment-methods", &MAY).await,
        "method,payments,amount,share_pct\n\
         card,2,15.50,47.7\n\
         cash,2,8.50,26.2\n\
         mobile,1,8.50,26.2\n"
    );

    assert_eq!(
        csv(&pool, "inventory-movement", &MAY).await,
        "product_id,product,restocked,sold,returned,adjusted,net,movements\n\
         10,Caffè latte,50,6,3,0,47,5\n\
         11,Croissant,0,3,0,-1,-4,3\n\
         12,Tea,20,0,0,0,20,1\n"
    );
}

#[tokio::test]
async fn headline_figures_follow_the_range_and_store() {
    let (_db, pool) = olap("questions_headline").await;
    load_fixture(&pool).await;
    const HEADER: &str =
        "today_revenue,today_orders,revenue,orders,average_order_value,open_orders\n";
    // Five revenue orders (order 3 was cancelled); orders 5 and 6 are still open; none today.
    assert_eq!(
        csv(&pool, "headline", &MAY).await,
        format!("{HEADER}0.00,0,32.50,5,6.50,2\n")
    );
    assert_eq!(
        csv(&pool, "headline", &[("store", ParamValue::Integer(2))]).await,
        format!("{HEADER}0.00,0,9.00,2,4.50,1\n")
    );
    let day2 = [("from", date("2024-05-02")), ("to", date("2024-05-02"))];
    assert_eq!(
        csv(&pool, "headline", &day2).await,
        format!("{HEADER}0.00,0,8.50,1,8.50,0\n")
    );
    // An empty range is one row of zeros, not no row.
    let january = [("from", date("2023-01-01")), ("to", date("2023-01-31"))];
    assert_eq!(
        csv(&pool, "headline", &january).await,
        format!("{HEADER}0.00,0,0.00,0,0.00,0\n")
    );
}

/// The BI tools' dashboard (`dashboards/dashboard.json`) draws columns its questions return.
#[tokio::test]
async fn every_chart_shows_columns_of_its_question() {
    let (_db, pool) = olap("questions_charts").await;
    load_fixture(&pool).await;
    let def = brewlytics_dashboards::definition::Definition::load().unwrap();
    for placed in def.charts() {
        let chart = placed.chart;
        let table = run(&pool, &chart.question, &MAY).await;
        for column in chart.x.iter().chain(&chart.y) {
            assert!(
                table.column(column).is_some(),
                "chart {}: {column} is not a column of {} ({:?})",
                chart.key(),
                chart.question,
                table.columns
            );
        }
    }
}

#[tokio::test]
async fn ranges_and_stores_filter() {
    let (_db, pool) = olap("questions_filters").await;
    load_fixture(&pool).await;
    let day2 = [("from", date("2024-05-02")), ("to", date("2024-05-02"))];

    assert_eq!(
        csv(&pool, "daily-revenue", &day2).await,
        "day,orders,items,revenue\n2024-05-02,1,3,8.50\n"
    );
    // From alone and to alone are bounds too (inclusive).
    assert_eq!(
        csv(&pool, "daily-revenue", &[("from", date("2024-05-03"))]).await,
        "day,orders,items,revenue\n2024-05-03,2,5,13.50\n"
    );
    assert_eq!(
        csv(&pool, "daily-revenue", &[("to", date("2024-05-01"))]).await,
        "day,orders,items,revenue\n2024-05-01,2,4,10.50\n"
    );
    assert_eq!(
        csv(&pool, "daily-revenue", &[("store", ParamValue::Integer(2))]).await,
        "day,orders,items,revenue\n2024-05-01,1,1,2.00\n2024-05-03,1,2,7.00\n"
    );
    // The SCD2 product on one day only shows its version of that day, still as one product.
    assert_eq!(
        csv(&pool, "top-products", &day2).await,
        "product_id,product,category,orders,items,revenue\n\
         11,Croissant,pastry,1,2,5.00\n\
         10,Caffè latte,coffee,1,1,3.50\n"
    );
    assert_eq!(
        csv(
            &pool,
            "inventory-movement",
            &[("store", ParamValue::Integer(2))]
        )
        .await,
        "product_id,product,restocked,sold,returned,adjusted,net,movements\n\
         12,Tea,20,0,0,0,20,1\n"
    );
    assert_eq!(
        csv(
            &pool,
            "payment-methods",
            &[
                ("store", ParamValue::Integer(1)),
                ("from", date("2024-05-02"))
            ]
        )
        .await,
        "method,payments,amount,share_pct\nmobile,1,8.50,56.7\ncash,1,6.50,43.3\n"
    );
}

#[tokio::test]
async fn empty_ranges_give_headers_and_no_rows() {
    let (_db, pool) = olap("questions_empty").await;
    load_fixture(&pool).await;
    let january = [("from", date("2023-01-01")), ("to", date("2023-01-31"))];
    for name in [
        "daily-revenue",
        "sales-by-category",
        "top-products",
        "top-customers",
        "sales-by-employee",
        "store-comparison",
        "average-order-value",
        "open-orders",
        "pending-items",
        "busiest-days",
        "payment-methods",
        "inventory-movement",
    ] {
        let table = run(&pool, name, &january).await;
        assert!(table.rows.is_empty(), "{name}: {:?}", table.rows);
        assert!(!table.columns.is_empty(), "{name} has a header");
    }
    assert_eq!(
        csv(&pool, "daily-revenue", &january).await,
        "day,orders,items,revenue\n"
    );
    // Peak hours always list the 24 hours; an empty range is all zeros.
    let hours = run(&pool, "revenue-by-hour", &january).await;
    assert_eq!(hours.rows.len(), 24);
    assert!(hours
        .to_csv()
        .lines()
        .skip(1)
        .all(|l| l.ends_with(",0,0.00")));
    // A from after to is simply empty.
    let reversed = [("from", date("2024-05-03")), ("to", date("2024-05-01"))];
    assert!(run(&pool, "daily-revenue", &reversed).await.rows.is_empty());
}

/// A deleted order goes through the replicator's own refresh (`star_refresh_orders`): while
/// it exists it is revenue; once its source rows are gone its facts are too.
#[tokio::test]
async fn deleted_orders_leave_the_figures() {
    let (_db, pool) = olap("questions_deleted").await;
    load_fixture(&pool).await;
    let order = "00000000-0000-0000-0000-0000000000aa";
    sqlx::raw_sql(&format!(
        "insert into replica.orders (id, customer_id, employee_id, store_id, status, payment_method, ordered_at, total)
         values ('{order}', 1, 1, 1, 'completed', 'card', '2024-05-02 10:00Z', 4.00);
         insert into replica.order_items (id, order_id, product_id, quantity, unit_price)
         values (500, '{order}', 12, 2, 2.00);
         select star_refresh_orders(array['{order}'::uuid]);"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let day2 = [("from", date("2024-05-02")), ("to", date("2024-05-02"))];
    assert_eq!(
        csv(&pool, "daily-revenue", &day2).await,
        "day,orders,items,revenue\n2024-05-02,2,5,12.50\n"
    );

    sqlx::raw_sql(&format!(
        "delete from replica.order_items where order_id = '{order}';
         delete from replica.orders where id = '{order}';
         select star_refresh_orders(array['{order}'::uuid]);"
    ))
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        csv(&pool, "daily-revenue", &day2).await,
        "day,orders,items,revenue\n2024-05-02,1,3,8.50\n"
    );

    // And a cancellation (status change) takes an order out of revenue.
    sqlx::query("update fact_sales set status = 'cancelled' where order_id = $1::uuid")
        .bind("00000000-0000-0000-0000-000000000004")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        csv(&pool, "daily-revenue", &day2).await,
        "day,orders,items,revenue\n"
    );
}
